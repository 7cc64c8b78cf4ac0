//! `make run`'s engine, `agentauth dev`: everything up, SERVING, then Ctrl-C stops all of it.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use agentauth_testkit::process::binary;
use agentauth_testkit::{openbao, wait_serving};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Nine consecutive free ports from `from` on: four services, the virtual MCP endpoints and the
/// webhook intake (the ports after the services'), OpenBao, the Asana sandbox, token-vault's
/// OAuth callback. Each test searches from its own `from`, so that two running at once do not
/// pick the same ones.
fn free_ports(from: u16) -> (u16, u16, u16, u16) {
    for base in (from..60_000).step_by(97) {
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

/// The `agentauth` CLI with the key `dev` wrote for `key`, against its services from port
/// `first`, with `args`.
fn agentauth_cli(
    data: &std::path::Path,
    first: u16,
    key: &str,
    args: &[&str],
) -> std::process::Command {
    let mut command = std::process::Command::new(binary("agentauth"));
    command
        .args([
            "--key-file",
            &data.join(format!("keys/{key}.key")).display().to_string(),
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
}

/// `agentauth dev` on `data` with `args` and the project's OpenBao, its output piped.
fn dev_command(data: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary("agentauth"));
    command
        .arg("dev")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .arg("--bao")
        .arg(openbao::binary().expect("bao"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Reads `agentauth dev`'s standard output until it says it is running, and returns it.
async fn running(dev: &mut tokio::process::Child) -> Vec<String> {
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
            return printed;
        }
    }
}

/// Sends Ctrl-C to `agentauth dev` and waits until it exits cleanly.
async fn interrupt(dev: &mut tokio::process::Child) {
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
}

#[tokio::test]
async fn dev_starts_all_four_services_and_ctrl_c_stops_everything() {
    let data = tempfile::tempdir().expect("tempdir");
    let (first, vault, sandbox, callback) = free_ports(20_000);
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
    let mut dev = dev_command(
        data.path(),
        &[
            "--first-port",
            &first.to_string(),
            "--vault-port",
            &vault.to_string(),
            "--sandbox-port",
            &sandbox.to_string(),
            "--callback-port",
            &callback.to_string(),
        ],
    )
    .spawn()
    .expect("spawn agentauth dev");
    let printed = running(&mut dev).await;
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

    let cli_as = |key: &str, args: &[&str]| agentauth_cli(data.path(), first, key, args);
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

    interrupt(&mut dev).await;
    for port in (first..first + 4).chain([vault, sandbox, callback]) {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is still held after dev stopped: something it started is still running"
        );
    }
}

/// Runs `command` with `input` on its standard input.
fn with_stdin(mut command: std::process::Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Consents to `link` at Asana (the sandbox's form, answered Allow) and follows the redirect
/// to token-vault's callback, which must connect the account.
async fn consent(asana: &str, link: &str) {
    let url = reqwest::Url::parse(link.trim()).expect("an authorization link");
    assert!(
        link.starts_with(&format!("{asana}/-/oauth_authorize")),
        "{link}"
    );
    let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    form.push(("decision".into(), "allow".into()));
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let consented = browser
        .post(format!("{asana}/-/oauth_authorize"))
        .form(&form)
        .send()
        .await
        .expect("consent");
    let callback = consented
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or_else(|| panic!("no redirect after consent: {consented:?}"))
        .to_owned();
    let connected = browser.get(&callback).send().await.expect("callback");
    assert!(connected.status().is_success(), "{connected:?}");
}

#[tokio::test]
async fn dev_runs_against_the_asana_and_postgresql_it_is_given() {
    let data = tempfile::tempdir().expect("tempdir");
    let (first, vault, asana_port, callback) = free_ports(40_000);
    // Asana: a sandbox at an address of the test's choosing, whose OAuth apps stand in for the
    // user's own and allow token-vault's callback.
    let control_key = agentauth_grpc::ApiKey::generate();
    let _asana_process = tokio::process::Command::new(binary("asana-sandbox"))
        .args(["--listen", &format!("127.0.0.1:{asana_port}")])
        .env("ASANA_SANDBOX_CONTROL_KEY", control_key.expose())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("asana-sandbox");
    let asana = format!("http://127.0.0.1:{asana_port}");
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(20),
        async {
            tokio::net::TcpStream::connect(("127.0.0.1", asana_port))
                .await
                .is_ok()
        },
        "the stand-in Asana listens"
    );
    for (client_id, secret, kind) in [
        ("sandbox-rest-app", "sandbox-rest-secret", "rest"),
        ("sandbox-mcp-app", "sandbox-mcp-secret", "mcp"),
    ] {
        let registered = reqwest::Client::new()
            .post(format!("{asana}/_sandbox/apps"))
            .header("X-Sandbox-Control-Key", control_key.expose())
            .json(&serde_json::json!({
                "client_id": client_id, "client_secret": secret, "name": client_id, "kind": kind,
                "redirect_uris": [format!("http://127.0.0.1:{callback}/oauth/callback")],
            }))
            .send()
            .await
            .expect("register the app");
        assert!(registered.status().is_success(), "{registered:?}");
    }
    let mcp_secret_file = data.path().join("mcp-client-secret");
    std::fs::write(&mcp_secret_file, "sandbox-mcp-secret\n").expect("secret file");
    let prefix = format!(
        "agentauth_dev_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let admin = agentauth_testkit::database::postgres_admin_url();
    let server = admin.rsplit_once('/').expect("admin URL").0;

    let mcp_secret_argument = mcp_secret_file.display().to_string();
    let mut dev = dev_command(
        data.path(),
        &[
            "--first-port",
            &first.to_string(),
            "--vault-port",
            &vault.to_string(),
            "--callback-port",
            &callback.to_string(),
            "--asana-url",
            &asana,
            "--asana-mcp-url",
            &format!("{asana}/v2/mcp"),
            "--client-id",
            "sandbox-rest-app",
            "--mcp-client-id",
            "sandbox-mcp-app",
            "--mcp-client-secret-file",
            &mcp_secret_argument,
            "--database-url",
            &format!("{server}/{prefix}"),
        ],
    )
    .env("AGENTAUTH_ASANA_CLIENT_SECRET", "sandbox-rest-secret")
    .spawn()
    .expect("spawn agentauth dev");
    let printed = running(&mut dev).await.join("\n");
    assert!(printed.contains(&format!("{asana}/api/1.0")), "{printed}");
    assert!(
        printed.contains(&format!("http://127.0.0.1:{callback}/oauth/callback")),
        "the redirect URL to allow in the OAuth apps: {printed}"
    );
    assert!(printed.contains("webhook intake       off"), "{printed}");
    let dev_pid = dev.id().expect("running");
    assert!(
        !a_child_has_on_its_command_line(dev_pid, "asana-sandbox"),
        "no sandbox of its own"
    );
    for secret in ["sandbox-rest-secret", "sandbox-mcp-secret"] {
        assert!(
            !a_child_has_on_its_command_line(dev_pid, secret),
            "{secret} on a command line"
        );
    }

    let cli = |args: &[&str]| agentauth_cli(data.path(), first, "agent", args);
    let connected = with_stdin(
        cli(&[
            "accounts",
            "connect",
            "--tenant",
            "dev",
            "--connection",
            "asana-pat",
            "--identifier",
            "alice",
            "--token-stdin",
        ]),
        "sandbox-pat-alice\n",
    );
    assert!(connected.status.success(), "{connected:?}");
    let exec = |connection: &str, identifier: &str, tool: &str, input: &str| {
        let executed = cli(&[
            "exec",
            tool,
            "--tenant",
            "dev",
            "--connection",
            connection,
            "--identifier",
            identifier,
            "--input",
            input,
        ])
        .output()
        .expect("exec");
        assert!(executed.status.success(), "{executed:?}");
        String::from_utf8_lossy(&executed.stdout).into_owned()
    };
    let me = exec(
        "asana-pat",
        "alice",
        "asana_api_get_user",
        r#"{"user_gid": "me"}"#,
    );
    assert!(me.contains("alice@acme.test"), "{me}");

    // OAuth with the apps' secrets, which dev read from the environment and a file into
    // OpenBao: REST and MCP.
    for connection in ["asana", "asana-mcp"] {
        let link = cli(&[
            "accounts",
            "connect",
            "--tenant",
            "dev",
            "--connection",
            connection,
            "--identifier",
            "bob",
        ])
        .output()
        .expect("accounts connect");
        assert!(link.status.success(), "{link:?}");
        consent(&asana, &String::from_utf8_lossy(&link.stdout)).await;
    }
    let me = exec(
        "asana",
        "bob",
        "asana_api_get_user",
        r#"{"user_gid": "me"}"#,
    );
    assert!(me.contains("\"gid\""), "{me}");
    let me = exec("asana-mcp", "bob", "get_me", "{}");
    assert!(me.contains("gid"), "{me}");

    // PostgreSQL: one database per service, and no SQLite file.
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("postgres");
    let databases: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY datname",
    )
    .bind(format!("{prefix}\\_%"))
    .fetch_all(&mut connection)
    .await
    .expect("databases");
    let services = [
        "audit_log",
        "connector_executor",
        "schema_watcher",
        "token_vault",
    ];
    assert_eq!(
        databases,
        services.map(|s| format!("{prefix}_{s}")).to_vec(),
    );
    let sqlite: Vec<_> = std::fs::read_dir(data.path())
        .expect("data dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .collect();
    assert!(sqlite.is_empty(), "{sqlite:?}");

    interrupt(&mut dev).await;
    let mut written = String::new();
    for folder in ["config", "logs"] {
        for entry in std::fs::read_dir(data.path().join(folder))
            .expect("folder")
            .flatten()
        {
            written.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    assert!(
        written.contains("sandbox-rest-app"),
        "the configs were read"
    );
    for entry in std::fs::read_dir(data.path().join("config"))
        .expect("config folder")
        .flatten()
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = entry.metadata().expect("metadata").permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{} holds the database URL: private",
            entry.path().display()
        );
    }
    for secret in ["sandbox-rest-secret", "sandbox-mcp-secret"] {
        assert!(!written.contains(secret), "{secret} in a config or log");
        assert!(!printed.contains(secret));
    }
    for database in databases {
        sqlx::Executor::execute(
            &mut connection,
            sqlx::AssertSqlSafe(format!(r#"DROP DATABASE "{database}" WITH (FORCE)"#)),
        )
        .await
        .expect("drop");
    }
}
