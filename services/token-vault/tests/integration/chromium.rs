//! The OAuth connect flow in headless Chromium (Debian's `chromium`, driven by playwright-core
//! from `.tools/node`): the sandbox shows its consent page (no auto-approve), the browser
//! clicks Allow, follows the redirect to token-vault's callback and lands on the success page;
//! the account is then ACTIVE.

use std::path::PathBuf;

use crate::support::Setup;
use agentauth_proto::vault::v1 as pb;

const CHROMIUM: &str = "/usr/bin/chromium";

/// `.tools/node`, where `make tools` installs playwright-core.
fn node_tools() -> PathBuf {
    std::env::var_os("AGENTAUTH_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| agentauth_testkit::workspace_root().join(".tools"))
        .join("node")
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_in_headless_chromium_connects_the_account() {
    assert!(
        std::path::Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run `make tools` (it installs Debian's chromium package)"
    );
    let tools = node_tools();
    assert!(
        tools.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing from {}: run `make tools`",
        tools.display()
    );
    let setup = Setup::start("sqlite", 1, false).await;
    let link = setup.link().await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/consent.mjs");
    let mut command = std::process::Command::new("node");
    command
        .arg(script)
        .arg(&link)
        .env("NODE_TOOLS_DIR", &tools)
        .env("CHROMIUM", CHROMIUM);
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::task::spawn_blocking(move || command.output().expect("node runs")),
    )
    .await
    .expect("the browser finished within 90 s")
    .expect("joined");
    assert!(
        output.status.success(),
        "the browser flow failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let landed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON line from the script");
    assert!(
        landed["consent"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&setup.sandbox_url)),
        "{landed}"
    );
    assert!(
        landed["url"]
            .as_str()
            .is_some_and(|u| u.contains("/oauth/callback")),
        "{landed}"
    );
    assert_eq!(landed["title"], "Connected", "{landed}");
    assert!(
        landed["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("asana is connected")
                && m.ends_with("You can close this window.")),
        "{landed}"
    );
    let account = setup.account("asana").await;
    assert_eq!(account.state, i32::from(pb::AccountState::Active));
    assert!(!account.asana_user_gid.is_empty());
}
