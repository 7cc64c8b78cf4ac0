//! token-vault's benchmark (not a test): `GetAccessToken` on the warm path beside a trivial RPC
//! (`GetConnection`) on the same server in the same run, and the refresh storm's total time
//! (200 concurrent calls over 3 replicas for one account needing a refresh) beside the same 200
//! calls once the token is warm again.
//!
//! `cargo bench -p token-vault --bench access_token` (needs the machine's PostgreSQL and the
//! OpenBao dev server from `make tools`).

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/support/vault.rs"]
#[allow(dead_code, reason = "shared with the tests")]
mod support;

use std::time::{Duration, Instant};

use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::bench::{Latencies, millis};
use support::{ALICE, Setup, TENANT};

const RUN: Duration = Duration::from_secs(3);
const STORM: usize = 200;
const STORM_ROUNDS: usize = 3;

#[derive(Clone, Copy)]
enum Rpc {
    GetConnection,
    GetAccessToken,
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

type Client = TokenVaultClient<AuthenticatedChannel>;

/// One call; clients are made once and cloned (each clone shares its replica's connection).
async fn call(client: &Client, rpc: Rpc) {
    let mut client = client.clone();
    match rpc {
        Rpc::GetConnection => {
            client
                .get_connection(pb::GetConnectionRequest {
                    name: "asana".into(),
                })
                .await
                .expect("GetConnection");
        }
        Rpc::GetAccessToken => {
            client
                .get_access_token(pb::GetAccessTokenRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana".into(),
                    identifier: ALICE.into(),
                    min_valid_for: None,
                })
                .await
                .expect("GetAccessToken");
        }
    }
}

/// `concurrency` callers calling `rpc` back to back for `RUN`.
async fn measure(client: &Client, rpc: Rpc, concurrency: usize) -> Figures {
    // Warm up the connection and caches.
    for _ in 0..50 {
        call(client, rpc).await;
    }
    let started = Instant::now();
    let deadline = started + RUN;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let at = Instant::now();
                    call(&client, rpc).await;
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("joined"));
    }
    let elapsed = started.elapsed();
    let Latencies { p50, p99 } = Latencies::of(&mut latencies);
    Figures {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50,
        p99,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", millis(d))
}

/// 200 concurrent `GetAccessToken` calls spread over the replicas; the total time.
async fn storm(clients: &[Client]) -> Duration {
    let started = Instant::now();
    let calls: Vec<_> = (0..STORM)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                call(&client, Rpc::GetAccessToken).await;
            })
        })
        .collect();
    for call in calls {
        call.await.expect("joined");
    }
    started.elapsed()
}

async fn warm_path() {
    let setup = Setup::start("postgres", 1, true).await;
    setup.connect_alice().await;
    let client = setup.client(0, &setup.reader);
    println!("GetAccessToken warm path (PostgreSQL, 1 replica, {RUN:?} per measure):");
    println!("| measure | requests/s | p50 | p99 | vs baseline (throughput / p50 / p99) |");
    println!("| --- | --- | --- | --- | --- |");
    for concurrency in [1, 16] {
        let base = measure(&client, Rpc::GetConnection, concurrency).await;
        let token = measure(&client, Rpc::GetAccessToken, concurrency).await;
        println!(
            "| `GetConnection`, concurrency {concurrency} (baseline) | {:.0} | {} | {} | 1 |",
            base.per_second,
            ms(base.p50),
            ms(base.p99)
        );
        println!(
            "| `GetAccessToken`, concurrency {concurrency} | {:.0} | {} | {} | {:.2}x / {:.2}x / {:.2}x |",
            token.per_second,
            ms(token.p50),
            ms(token.p99),
            token.per_second / base.per_second,
            token.p50.as_secs_f64() / base.p50.as_secs_f64(),
            token.p99.as_secs_f64() / base.p99.as_secs_f64(),
        );
    }
    assert_eq!(setup.refreshes(), 0, "the warm path never refreshes");
}

async fn refresh_storm() {
    println!(
        "\nRefresh storm ({STORM} concurrent GetAccessToken over 3 replicas, PostgreSQL, one account):"
    );
    println!("| round | storm (one refresh) | same 200 calls, warm (baseline) | ratio |");
    println!("| --- | --- | --- | --- |");
    for round in 1..=STORM_ROUNDS {
        let setup = Setup::start("postgres", 3, true).await;
        // The first token lives one minute: within the five-minute margin, so it needs a refresh.
        setup.sandbox.tokens().lifetime = Duration::from_secs(60);
        setup.connect_alice().await;
        setup.sandbox.tokens().lifetime = Duration::from_secs(3600);
        let clients: Vec<Client> = (0..3).map(|r| setup.client(r, &setup.reader)).collect();
        // Open every replica's connection first, so the storm does not time connection set-up.
        for client in &clients {
            call(client, Rpc::GetConnection).await;
        }
        let stormy = storm(&clients).await;
        assert_eq!(setup.refreshes(), 1, "exactly one refresh upstream");
        let warm = storm(&clients).await;
        assert_eq!(setup.refreshes(), 1);
        println!(
            "| {round} | {} | {} | {:.2}x |",
            ms(stormy),
            ms(warm),
            stormy.as_secs_f64() / warm.as_secs_f64()
        );
    }
}

#[tokio::main]
async fn main() {
    warm_path().await;
    refresh_storm().await;
}
