//! Each service binary: starts, reports SERVING, refuses bad configuration, stops on SIGTERM.

use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_testkit::process::{ServiceProcess, run_to_exit};
use agentauth_testkit::{health_status, openbao, wait_serving};
use tonic_health::ServingStatus;

pub const SERVICES: [&str; 4] = [
    "token-vault",
    "connector-executor",
    "audit-log",
    "schema-watcher",
];

/// A minimal valid configuration for `service`, admitting `key` for tenant `acme` with the
/// service's broadest roles (audit-log: `writer` and `operator`).
pub fn config(service: &str, key: &ApiKey) -> String {
    let roles = match service {
        "audit-log" => r#"["writer", "operator"]"#,
        "connector-executor" => r#"["executor", "proxy"]"#,
        _ => r#"["operator"]"#,
    };
    let mut config = format!(
        "[server]\nshutdown_grace = \"5s\"\nreadiness_interval = \"100ms\"\n\n[[server.callers]]\nname = \"test\"\nkey_sha256 = \"{}\"\ntenants = [\"acme\"]\nroles = {roles}\n",
        key.hash()
    );
    if service == "token-vault" {
        config.push_str(&format!(
            "\n[vault]\naddr = \"{}\"\n{}",
            openbao::shared().addr(),
            oauth_listener()
        ));
    }
    config
}

/// token-vault's `[oauth]` section with the callback on a free port: its default,
/// 127.0.0.1:50060, belongs to `agentauth dev`, which another test runs at the same time.
pub fn oauth_listener() -> String {
    format!(
        "\n[oauth]\nhttp_listen = \"{}\"\n",
        agentauth_testkit::free_port()
    )
}

/// Starts `service` with its minimal configuration and its dependencies' credentials.
pub fn start(service: &str, key: &ApiKey) -> ServiceProcess {
    ServiceProcess::start(
        service,
        &config(service, key),
        &[("VAULT_TOKEN", openbao::shared().token())],
    )
    .unwrap_or_else(|e| panic!("{service}: {e:#}"))
}

#[tokio::test]
async fn every_service_reports_serving_and_stops_cleanly_on_sigterm() {
    let key = ApiKey::generate();
    let running: Vec<_> = SERVICES.iter().map(|s| start(s, &key)).collect();
    for process in &running {
        wait_serving(process.address(), "", Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
    }
    for process in running {
        let log_before = process.log();
        let status = process
            .terminate(Duration::from_secs(10))
            .await
            .expect("exits after SIGTERM");
        assert!(status.success(), "exit {status}; log:\n{log_before}");
    }
}

#[tokio::test]
async fn token_vault_is_not_serving_while_vault_is_unreachable() {
    let key = ApiKey::generate();
    let unreachable = agentauth_testkit::free_port();
    // schema-watcher's minimal configuration has no [vault] section and an `operator` caller.
    let config = config("schema-watcher", &key)
        + &format!("\n[vault]\naddr = \"http://{unreachable}\"\n")
        + &oauth_listener();
    let process = ServiceProcess::start("token-vault", &config, &[]).expect("start");
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(30),
        async {
            health_status(process.address(), "").await.ok() == Some(ServingStatus::NotServing)
        },
        "token-vault answers health but reports NOT_SERVING without Vault; its log:\n{}",
        process.log()
    );
}

#[tokio::test]
async fn bad_configuration_exits_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "unknown key",
            "[server]\nlisten = \"127.0.0.1:0\"\nlisten_port = 1\n",
            "listen_port",
        ),
        (
            "bad value",
            "[server]\nlisten = \"not-an-address\"\n",
            "listen",
        ),
        (
            "bad key hash",
            "[[server.callers]]\nname = \"x\"\nkey_sha256 = \"abc\"\ntenants = [\"*\"]\n",
            "key_sha256",
        ),
        ("syntax", "[server\n", "config"),
    ];
    for service in SERVICES {
        for (case, text, mentions) in cases {
            let path = dir
                .path()
                .join(format!("{service}-{}.toml", case.replace(' ', "-")));
            std::fs::write(&path, text).expect("write config");
            let (status, stderr) =
                run_to_exit(service, &["--config", path.to_str().expect("utf-8")], &[])
                    .await
                    .expect("runs");
            assert_eq!(status.code(), Some(2), "{service}, {case}: {stderr}");
            assert_eq!(
                stderr.trim().lines().count(),
                1,
                "{service}, {case}: one line, got:\n{stderr}"
            );
            assert!(stderr.contains(mentions), "{service}, {case}: {stderr}");
        }
    }
    let (status, stderr) = run_to_exit(
        "audit-log",
        &[],
        &[("AUDIT_LOG__SERVER__LISTEN", "nowhere")],
    )
    .await
    .expect("runs");
    assert_eq!(
        status.code(),
        Some(2),
        "a bad environment value is refused too: {stderr}"
    );
    let (status, stderr) = run_to_exit("audit-log", &["--config", "/nonexistent.toml"], &[])
        .await
        .expect("runs");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

/// `--check-config` refuses what connector-executor would refuse at start, without reading a
/// key file or connecting to anything: what `make deploy-check` relies on.
#[tokio::test]
async fn connector_executor_checks_its_whole_configuration_without_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ApiKey::generate();
    let base = config("connector-executor", &key);
    let unreachable = agentauth_testkit::free_port();
    let signing = "[virtual_mcp]\nlisten = \"127.0.0.1:0\"\n\n[[virtual_mcp.signing_keys]]\nid = \"k1\"\nkey_file = \"/nonexistent/k1.key\"\n";
    let database = "[database]\nurl = \"sqlite:///nonexistent/db.sqlite\"\n";
    let cases = [
        (
            "shared limits on another scheme",
            "[limits.shared]\nurl = \"http://127.0.0.1:6379\"\n".to_owned(),
            "[limits.shared] url",
        ),
        (
            "no replica",
            format!("[limits.shared]\nurl = \"redis://{unreachable}\"\nreplicas = 0\n"),
            "replicas",
        ),
        (
            "ttl order",
            format!("{database}{signing}default_ttl = \"2h\"\nmax_ttl = \"1h\"\n"),
            "default_ttl",
        ),
        (
            "key id",
            format!(
                "{database}{signing}\n[[virtual_mcp.signing_keys]]\nid = \"k1\"\nkey_file = \"/nonexistent/k2.key\"\n"
            ),
            "appears twice",
        ),
        (
            "servers without a key",
            "[[virtual_servers]]\nname = \"people\"\nminters = [\"test\"]\n\n[[virtual_servers.tools]]\nconnection = \"asana-pat\"\ntool = \"asana_user_me\"\n".to_owned(),
            "signing key",
        ),
        (
            "sessions without a database",
            signing.to_owned(),
            "[database]",
        ),
        (
            "webhooks without a database",
            "[webhooks]\npublic_url = \"https://hooks.example\"\n".to_owned(),
            "[database]",
        ),
    ];
    let check = |name: &str, text: &str| {
        let path = dir.path().join(format!("{}.toml", name.replace(' ', "-")));
        std::fs::write(&path, format!("{base}\n{text}")).expect("write config");
        let path = path.to_str().expect("utf-8").to_owned();
        async move {
            run_to_exit(
                "connector-executor",
                &["--config", &path, "--check-config"],
                &[],
            )
            .await
            .expect("runs")
        }
    };
    for (case, text, mentions) in &cases {
        let (status, stderr) = check(case, text).await;
        assert_eq!(status.code(), Some(2), "{case}: {stderr}");
        assert!(stderr.contains(mentions), "{case}: {stderr}");
    }
    // A shared limiter nothing answers at, a key file that does not exist: nothing is read or
    // connected to, so the configuration itself is fine.
    let (status, stderr) = check(
        "fine",
        &format!(
            "[limits.shared]\nurl = \"redis://{unreachable}\"\nreplicas = 3\n\n{database}{signing}"
        ),
    )
    .await;
    assert!(status.success(), "{stderr}");
}
