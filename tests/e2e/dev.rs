//! `make run`'s engine, `agentauth dev`: everything up, SERVING, then Ctrl-C stops all of it.

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agentauth_testkit::process::binary;
use agentauth_testkit::{openbao, wait_serving};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Six consecutive free ports: four services, OpenBao, the Asana sandbox.
fn free_ports() -> (u16, u16, u16) {
    for base in (20_000u16..60_000).step_by(97) {
        let all_free =
            (base..base + 6).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return (base, base + 4, base + 5);
        }
    }
    panic!("no six consecutive free ports");
}

#[tokio::test]
async fn dev_starts_all_four_services_and_ctrl_c_stops_everything() {
    let data = tempfile::tempdir().expect("tempdir");
    let (first, vault, sandbox) = free_ports();
    let started_at = Instant::now();
    let mut dev = tokio::process::Command::new(binary("agentauth"))
        .arg("dev")
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--first-port",
            &first.to_string(),
            "--vault-port",
            &vault.to_string(),
            "--sandbox-port",
            &sandbox.to_string(),
        ])
        .arg("--bao")
        .arg(openbao::binary().expect("bao"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agentauth dev");
    let mut lines = BufReader::new(dev.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("agentauth dev prints within 60s")
            .expect("read")
            .expect("agentauth dev exited before it was running");
        printed.push(line.clone());
        if line.contains("Try") {
            break;
        }
    }
    let elapsed = started_at.elapsed();
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("127.0.0.1:{first}"))),
        "{printed:?}"
    );
    for port in first..first + 4 {
        wait_serving(([127, 0, 0, 1], port).into(), "", Duration::from_secs(1))
            .await
            .expect("each service SERVING once dev says it is running");
    }
    assert!(data.path().join("keys/operator.key").is_file());
    let sandbox_answers = tokio::net::TcpStream::connect(("127.0.0.1", sandbox)).await;
    assert!(sandbox_answers.is_ok(), "the Asana sandbox is up");

    let cli = |args: &[&str]| {
        let mut command = std::process::Command::new(binary("agentauth"));
        command
            .args([
                "--key-file",
                &data.path().join("keys/operator.key").display().to_string(),
            ])
            .args([
                "--token-vault",
                &format!("http://127.0.0.1:{first}"),
                "--connector-executor",
                &format!("http://127.0.0.1:{}", first + 1),
            ])
            .args(args);
        command
    };
    let mut connect = cli(&[
        "accounts",
        "connect",
        "--tenant",
        "dev",
        "--connection",
        "asana-pat",
        "--identifier",
        "alice",
        "--token-stdin",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn accounts connect");
    connect
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"sandbox-pat-alice\n")
        .expect("write the PAT");
    let connected = connect.wait_with_output().expect("accounts connect");
    assert!(connected.status.success(), "{connected:?}");
    let listed = cli(&[
        "tools",
        "list",
        "--connection",
        "asana-pat",
        "--prefix",
        "asana_task_",
    ])
    .output()
    .expect("tools list");
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        listed_text.contains("asana-pat\tasana_task_create\tcurated\twrite"),
        "{listed_text}"
    );
    let executed = cli(&[
        "exec",
        "asana_api_get_user",
        "--tenant",
        "dev",
        "--connection",
        "asana-pat",
        "--identifier",
        "alice",
        "--input",
        r#"{"user_gid": "me"}"#,
    ])
    .output()
    .expect("exec");
    let output = String::from_utf8_lossy(&executed.stdout);
    assert!(executed.status.success(), "{executed:?}");
    assert!(output.contains("alice@acme.test"), "{output}");
    assert!(
        !output.contains("sandbox-pat-alice"),
        "the PAT never comes back"
    );

    let pid = dev.id().expect("running").to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), dev.wait())
        .await
        .expect("dev exits after Ctrl-C")
        .expect("wait");
    assert!(status.success(), "exit {status}");
    for port in (first..first + 4).chain([vault, sandbox]) {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is still held after dev stopped: something it started is still running"
        );
    }
}
