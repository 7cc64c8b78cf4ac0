//! The Kubernetes probes of each binary: a dependency taken away (a partition between the
//! service and its real database, Vault or Redis) turns readiness NOT_SERVING and back to
//! SERVING when it returns, while `liveness` stays SERVING throughout, so Kubernetes stops
//! routing to the pod without restarting it.

use std::net::SocketAddr;
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::server::LIVENESS;
use agentauth_testkit::database::PostgresDatabase;
use agentauth_testkit::process::ServiceProcess;
use agentauth_testkit::relay::Relay;
use agentauth_testkit::{health_status, openbao, wait_serving};
use tonic_health::ServingStatus;

use crate::binaries::config;

const WITHIN: Duration = Duration::from_secs(30);

/// Readiness (the whole server's status) of `process`, asserting on the way that its liveness
/// holds.
async fn readiness(process: &ServiceProcess) -> Option<ServingStatus> {
    let live = health_status(process.address(), LIVENESS).await;
    assert!(
        matches!(live, Ok(ServingStatus::Serving)),
        "liveness must hold while a dependency is away: {live:?}\n{}",
        process.log()
    );
    health_status(process.address(), "").await.ok()
}

/// Cuts `relay` and restores it, following `process`'s readiness down and up again.
async fn take_away_and_return(process: &ServiceProcess, relay: &Relay, dependency: &str) {
    wait_serving(process.address(), "", WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
    relay.cut();
    agentauth_testkit::assert_eventually!(
        WITHIN,
        async { readiness(process).await == Some(ServingStatus::NotServing) },
        "NOT_SERVING without {dependency}; log:\n{}",
        process.log()
    );
    relay.restore().await.expect("restore");
    agentauth_testkit::assert_eventually!(
        WITHIN,
        async { readiness(process).await == Some(ServingStatus::Serving) },
        "SERVING again once {dependency} is back; log:\n{}",
        process.log()
    );
}

fn socket(url: &str) -> SocketAddr {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("{host_port}: {e}"))
}

/// A fresh PostgreSQL database and the URL that reaches it through a relay.
async fn postgres_through_relay() -> (PostgresDatabase, Relay, String) {
    let database = PostgresDatabase::create().await.expect("postgres");
    let relay = Relay::start(socket(database.url())).await.expect("relay");
    let name = database.url().rsplit('/').next().expect("database name");
    let url = format!("postgres://postgres@{}/{name}", relay.address());
    (database, relay, url)
}

#[tokio::test]
async fn audit_log_is_unready_without_its_database_and_ready_when_it_returns() {
    let key = ApiKey::generate();
    let (_database, relay, url) = postgres_through_relay().await;
    let toml = config("audit-log", &key) + &format!("\n[database]\nurl = \"{url}\"\n");
    let process = ServiceProcess::start("audit-log", &toml, &[]).expect("start");
    take_away_and_return(&process, &relay, "PostgreSQL").await;
}

#[tokio::test]
async fn schema_watcher_is_unready_without_its_database_and_ready_when_it_returns() {
    let key = ApiKey::generate();
    let (_database, relay, url) = postgres_through_relay().await;
    let toml = config("schema-watcher", &key) + &format!("\n[database]\nurl = \"{url}\"\n");
    let process = ServiceProcess::start("schema-watcher", &toml, &[]).expect("start");
    take_away_and_return(&process, &relay, "PostgreSQL").await;
}

#[tokio::test]
async fn token_vault_is_unready_without_vault_and_ready_when_it_returns() {
    let key = ApiKey::generate();
    let vault = openbao::shared();
    let relay = Relay::start(socket(vault.addr())).await.expect("relay");
    let toml = config("token-vault", &key).replace(
        &format!("addr = \"{}\"", vault.addr()),
        &format!("addr = \"http://{}\"", relay.address()),
    );
    assert!(toml.contains(&relay.address().to_string()), "{toml}");
    let process = ServiceProcess::start("token-vault", &toml, &[("VAULT_TOKEN", vault.token())])
        .expect("start");
    take_away_and_return(&process, &relay, "Vault").await;
}

#[tokio::test]
async fn connector_executor_is_unready_without_a_shared_limiter_that_fails_closed() {
    let key = ApiKey::generate();
    let redis = agentauth_testkit::redis::shared_url();
    let relay = Relay::start(socket(&redis)).await.expect("relay");
    let toml = config("connector-executor", &key)
        + &format!(
            "\n[limits.shared]\nurl = \"redis://{}\"\nkey_prefix = \"{}\"\non_outage = \"fail_closed\"\n",
            relay.address(),
            agentauth_testkit::redis::fresh_prefix()
        );
    let process = ServiceProcess::start("connector-executor", &toml, &[]).expect("start");
    take_away_and_return(&process, &relay, "Redis").await;
}
