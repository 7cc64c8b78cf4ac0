//! `make run`'s engine, `agentauth dev`: everything up, SERVING, then Ctrl-C stops all of it.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use agentauth_testkit::process::binary;
use agentauth_testkit::{openbao, wait_serving};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Nine consecutive free ports: four services, the virtual MCP endpoints and the webhook
/// intake (the ports after the services'), OpenBao, the Asana sandbox, token-vault's OAuth
/// callback.
fn free_ports() -> (u16, u16, u16, u16) {
    for base in (20_000u16..60_000).step_by(97) {
        let all_free =
            (base..base + 9).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return (base, base + 6, base + 7, base + 8);
        }
    }
    panic!("no nine consecutive free ports");
}

/// Whether any process whose parent is `pid` has `needle` on its command line.
fn a_child_has_on_its_command_line(pid: u32, needle: &str) -> bool {
    let proc = std::fs::read_dir("/proc").expect("/proc is readable on Linux");
    proc.flatten().any(|entry| {
        let dir = entry.path();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: the command name may hold spaces, so split after `)`.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        parent == Some(pid)
            && String::from_utf8_lossy(&std::fs::read(dir.join("cmdline")).unwrap_or_default())
                .contains(needle)
    })
}

#[tokio::test]
async fn dev_starts_all_four_services_and_ctrl_c_stops_everything() {
    let data = tempfile::tempdir().expect("tempdir");
    let (first, vault, sandbox, callback) = free_ports();
    // A developer's own caller, admitted to audit-log as a reader.
    let own_key = agentauth_grpc::ApiKey::generate();
    std::fs::create_dir_all(data.path().join("callers")).expect("callers folder");
    std::fs::write(
        data.path().join("callers/audit-log.toml"),
        format!(
            "[[callers]]\nname = \"my-dashboard\"\nkey_sha256 = \"{}\"\ntenants = [\"dev\"]\nroles = [\"reader\"]\n",
            own_key.hash()
        ),
    )
    .expect("own callers");
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
            "--callback-port",
            &callback.to_string(),
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
    for key in [
        "operator",
        "agent",
        "connector-executor",
        "token-vault",
        "schema-watcher",
    ] {
        let path = data.path().join(format!("keys/{key}.key"));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(mode.mode() & 0o777, 0o600, "{} is private", path.display());
    }
    let dev_pid = dev.id().expect("running");
    assert!(
        !a_child_has_on_its_command_line(dev_pid, "root-token"),
        "OpenBao's root token is passed by environment, not on a command line"
    );
    let sandbox_answers = tokio::net::TcpStream::connect(("127.0.0.1", sandbox)).await;
    assert!(sandbox_answers.is_ok(), "the Asana sandbox is up");

    let mut own = agentauth_proto::audit::v1::audit_log_client::AuditLogClient::new(
        agentauth_grpc::client::channel(&format!("http://127.0.0.1:{}", first + 2), Some(&own_key))
            .expect("channel"),
    );
    own.verify_chain(agentauth_proto::audit::v1::VerifyChainRequest {
        tenant: "dev".into(),
        ..Default::default()
    })
    .await
    .expect("the developer's own caller is admitted with its role");
    let refused = own
        .append(agentauth_proto::audit::v1::AppendRequest::default())
        .await
        .expect_err("a reader does not append");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    let cli_as = |key: &str, args: &[&str]| {
        let mut command = std::process::Command::new(binary("agentauth"));
        command
            .args([
                "--key-file",
                &data
                    .path()
                    .join(format!("keys/{key}.key"))
                    .display()
                    .to_string(),
            ])
            .args([
                "--token-vault",
                &format!("http://127.0.0.1:{first}"),
                "--connector-executor",
                &format!("http://127.0.0.1:{}", first + 1),
                "--schema-watcher",
                &format!("http://127.0.0.1:{}", first + 3),
            ])
            .args(args);
        command
    };
    let cli = |args: &[&str]| cli_as("agent", args);
    // `accounts connect --token-stdin` stores a PAT for alice.
    let put = |token: &str, extra: &[&str]| {
        let mut args = vec![
            "accounts",
            "connect",
            "--tenant",
            "dev",
            "--connection",
            "asana-pat",
            "--identifier",
            "alice",
            "--token-stdin",
        ];
        args.extend_from_slice(extra);
        let mut put = cli(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn accounts connect");
        put.stdin
            .take()
            .expect("stdin")
            .write_all(format!("{token}\n").as_bytes())
            .expect("write the PAT");
        put.wait_with_output().expect("accounts connect")
    };
    let connected = put("sandbox-pat-alice", &[]);
    assert!(connected.status.success(), "{connected:?}");
    // Bob's PAT for alice's account is refused, unless the command says to replace the user.
    let refused = put("sandbox-pat-bob", &[]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--replace-user"),
        "{refused:?}"
    );
    let replaced = put("sandbox-pat-bob", &["--replace-user"]);
    assert!(replaced.status.success(), "{replaced:?}");
    let restored = put("sandbox-pat-alice", &["--replace-user"]);
    assert!(restored.status.success(), "{restored:?}");
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
    // The MCP connection lists its upstream tools before any user has called it.
    let mcp_tools = cli_as("operator", &["tools", "list", "--connection", "asana-mcp"])
        .output()
        .expect("tools list");
    let mcp_text = String::from_utf8_lossy(&mcp_tools.stdout);
    assert!(mcp_tools.status.success(), "{mcp_tools:?}");
    assert!(mcp_text.contains("asana-mcp\tget_me\t"), "{mcp_text}");

    // The virtual MCP server `people`: the agent mints alice a session, and an MCP client
    // configured from the printed snippet is answered as agentauth.
    let minted = cli(&[
        "mcp",
        "mint",
        "--virtual-server",
        "people",
        "--tenant",
        "dev",
        "--identifier",
        "alice",
        "--ttl",
        "5m",
    ])
    .output()
    .expect("mcp mint");
    let minted_text = String::from_utf8_lossy(&minted.stdout).into_owned();
    assert!(minted.status.success(), "{minted:?}");
    let line = |name: &str| {
        minted_text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {minted_text}"))
            .to_owned()
    };
    let (url, bearer) = (line("url"), line("bearer"));
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{}/mcp/people/", first + 4)),
        "{url}"
    );
    assert!(minted_text.contains("\"mcpServers\""), "{minted_text}");
    let initialized = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&bearer)
        .header("accept", "application/json, text/event-stream")
        .json(
            &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "dev-test", "version": "1"}}}),
        )
        .send()
        .await
        .expect("initialize");
    assert_eq!(initialized.status(), 200);
    let body = initialized.text().await.expect("body");
    assert!(body.contains("\"agentauth\""), "{body}");
    // The operator lists the session and revokes it; its bearer is refused from then on.
    let session_id = line("session_id");
    let sessions = cli_as("operator", &["mcp", "sessions", "list", "--tenant", "dev"])
        .output()
        .expect("mcp sessions list");
    let sessions_text = String::from_utf8_lossy(&sessions.stdout).into_owned();
    assert!(sessions.status.success(), "{sessions:?}");
    assert!(
        sessions_text.contains(&format!("{session_id}  people  alice  minted by agent")),
        "{sessions_text}"
    );
    assert!(!sessions_text.contains(&bearer), "no bearer is listed");
    let revoked = cli_as(
        "operator",
        &[
            "mcp",
            "sessions",
            "revoke",
            "--tenant",
            "dev",
            "--session-id",
            &session_id,
        ],
    )
    .output()
    .expect("mcp sessions revoke");
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(
        String::from_utf8_lossy(&revoked.stdout).starts_with("revoked"),
        "{revoked:?}"
    );
    let refused = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&bearer)
        .header("accept", "application/json, text/event-stream")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status(), 401, "a revoked session's bearer");

    // Asana webhooks: alice's task is subscribed to, a change to it reaches `events follow`.
    let exec_json = |tool: &str, input: serde_json::Value| {
        let executed = cli(&[
            "exec",
            tool,
            "--tenant",
            "dev",
            "--connection",
            "asana-pat",
            "--identifier",
            "alice",
            "--input",
            &input.to_string(),
        ])
        .output()
        .expect("exec");
        assert!(executed.status.success(), "{executed:?}");
        serde_json::from_slice::<serde_json::Value>(&executed.stdout).expect("JSON output")
    };
    let me = exec_json("asana_api_get_user", serde_json::json!({"user_gid": "me"}));
    let workspace = me["workspaces"][0]["gid"].as_str().expect("a workspace");
    let task = exec_json(
        "asana_task_create",
        serde_json::json!({"name": "Webhook probe", "workspace": workspace}),
    );
    let task_gid = task["gid"].as_str().expect("the task's gid").to_owned();
    let subscribed = cli(&[
        "events",
        "subscribe",
        "--tenant",
        "dev",
        "--connection",
        "asana-pat",
        "--identifier",
        "alice",
        "--resource",
        &task_gid,
    ])
    .output()
    .expect("events subscribe");
    let subscribed_text = String::from_utf8_lossy(&subscribed.stdout).into_owned();
    assert!(subscribed.status.success(), "{subscribed:?}");
    assert!(
        subscribed_text.contains(&format!("ACTIVE  asana-pat/alice  resource {task_gid}")),
        "{subscribed_text}"
    );
    exec_json(
        "asana_task_update",
        serde_json::json!({"task_gid": task_gid, "notes": "seen by a webhook"}),
    );
    let followed = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::from(cli(&[
            "events", "follow", "--tenant", "dev", "--cursor", "ev1.0", "--count", "1",
        ]))
        .output(),
    )
    .await
    .expect("an event within 30 s")
    .expect("events follow");
    assert!(followed.status.success(), "{followed:?}");
    let event: serde_json::Value =
        serde_json::from_slice(&followed.stdout).expect("one JSON event");
    assert_eq!(event["resource"]["gid"], task_gid.as_str(), "{event}");
    assert!(
        event["cursor"]
            .as_str()
            .is_some_and(|c| c.starts_with("ev1."))
    );
    let listed = cli(&["events", "list", "--tenant", "dev"])
        .output()
        .expect("events list");
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("last delivery"),
        "{listed:?}"
    );
    let subscription_id = subscribed_text
        .split_whitespace()
        .next()
        .expect("the subscription id")
        .to_owned();
    for (verb, done) in [("pause", "PAUSED"), ("resume", "ACTIVE")] {
        let changed = cli(&[
            "events",
            verb,
            "--tenant",
            "dev",
            "--subscription-id",
            &subscription_id,
        ])
        .output()
        .expect("events pause/resume");
        let text = String::from_utf8_lossy(&changed.stdout).into_owned();
        assert!(changed.status.success(), "{changed:?}");
        assert!(
            text.contains(&format!("{subscription_id}  {done}")),
            "{text}"
        );
    }

    // schema-watcher follows the sandbox's MCP tools: a change made through the sandbox's
    // control API is reported, shown as a diff, and approved from the CLI.
    let control_key = std::fs::read_to_string(data.path().join("keys/sandbox-control.key"))
        .expect("the sandbox's control key");
    let control = reqwest::Client::new();
    let drift_list = || {
        let listed = cli_as("operator", &["drift", "list"])
            .output()
            .expect("drift list");
        assert!(listed.status.success(), "{listed:?}");
        String::from_utf8_lossy(&listed.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let reported = loop {
        // Changed until a poll has a baseline to compare with (the first is approved).
        let patched = control
            .patch(format!("http://127.0.0.1:{sandbox}/_sandbox/mcp/tools/get_me"))
            .header("X-Sandbox-Control-Key", control_key.trim())
            .json(&serde_json::json!({"description": format!("Who you are ({:?}).", std::time::Instant::now())}))
            .send()
            .await
            .expect("sandbox control");
        assert!(patched.status().is_success(), "{patched:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let listed = drift_list();
        if let Some(line) = listed.lines().find(|l| l.contains(" get_me  changed")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no drift of get_me reported: {listed}"
        );
    };
    let id = reported.split_whitespace().next().expect("the drift's id");
    let shown = cli_as("operator", &["drift", "show", id, "--color", "never"])
        .output()
        .expect("drift show");
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    assert!(shown_text.contains("description changed"), "{shown_text}");
    assert!(shown_text.contains("-   \"description\""), "{shown_text}");
    assert!(shown_text.contains("+   \"description\""), "{shown_text}");
    let snapshot = shown_text
        .lines()
        .find_map(|l| l.strip_prefix("seen in snapshot"))
        .map(str::trim)
        .expect("show names the snapshot the drift was seen in")
        .to_owned();
    let approved = cli_as(
        "operator",
        &[
            "drift",
            "approve",
            "--connection",
            "asana-mcp",
            "--snapshot",
            &snapshot,
        ],
    )
    .output()
    .expect("drift approve");
    assert!(approved.status.success(), "{approved:?}");
    assert!(
        String::from_utf8_lossy(&approved.stdout).contains("baseline of asana-mcp is now"),
        "{approved:?}"
    );
    let refused = cli(&[
        "drift",
        "approve",
        "--connection",
        "asana-mcp",
        "--snapshot",
        &snapshot,
    ])
    .output()
    .expect("drift approve as the agent");
    assert!(!refused.status.success(), "only an operator approves");

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
    let operator_exec = cli_as(
        "operator",
        &[
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
        ],
    )
    .output()
    .expect("exec as the operator");
    assert!(
        !operator_exec.status.success(),
        "the operator administers; it does not run tools"
    );
    assert!(
        String::from_utf8_lossy(&operator_exec.stderr).contains("may not call"),
        "{operator_exec:?}"
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
    for port in (first..first + 4).chain([vault, sandbox, callback]) {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is still held after dev stopped: something it started is still running"
        );
    }
}
