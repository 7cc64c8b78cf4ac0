//! Asana's per-token limits held by connector-executor before a request leaves: the sandbox's
//! counters for the token prove what Asana would have seen.

use std::time::{Duration, Instant};

use crate::system::{Options, System, TENANT};
use agentauth_proto::audit::v1 as audit_pb;
use agentauth_proto::executor::v1 as pb;
use asana_sandbox::seed::{ALICE_PAT, BOB_PAT};
use asana_sandbox::{Fault, LimitConfig};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt as _;

/// The gid of the seeded workspace named `name`.
fn workspace(system: &System, name: &str) -> String {
    system
        .sandbox
        .world()
        .all("workspace", |w| w["name"] == name)
        .next()
        .and_then(|w| w["gid"].as_str())
        .expect("seeded workspace")
        .to_owned()
}

fn request(tool: &str, input: &Value) -> pb::ExecuteToolRequest {
    pb::ExecuteToolRequest {
        tenant: TENANT.into(),
        connection_name: "asana-pat".into(),
        identifier: "alice".into(),
        tool_name: tool.into(),
        input_json: input.to_string(),
        options: None,
    }
}

/// The RetryInfo delay of a RESOURCE_EXHAUSTED status.
fn retry_delay(status: &tonic::Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay")
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {stats}"))
}

/// Requests the sandbox has seen with alice's PAT (token-vault's check of the PAT when it is
/// stored is one).
fn alice_requests(system: &System) -> u64 {
    counter(&system.token_stats(ALICE_PAT), "requests_total")
}

/// The details of tenant `acme`'s events denied by a rate limit, once there are `count`.
async fn rate_limited_events(system: &System, count: usize) -> Vec<Value> {
    let denied = || async {
        system
            .audit_events(TENANT)
            .await
            .into_iter()
            .filter(|e| e.outcome() == audit_pb::Outcome::Denied)
            .map(|e| serde_json::from_str(&e.details_json).expect("details are JSON"))
            .filter(|d: &Value| d["error_reason"] == "RATE_LIMITED")
            .collect::<Vec<Value>>()
    };
    let found = agentauth_testkit::eventually(Duration::from_secs(10), || async {
        Some(denied().await).filter(|d| d.len() >= count)
    })
    .await;
    let found = found.unwrap_or_default();
    assert_eq!(found.len(), count, "{found:?}");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_stays_within_fifteen_in_flight_and_the_minute_budget() {
    let system = System::start(Options::default()).await;
    system.connect_pat("alice", ALICE_PAT).await;
    let workspace = workspace(&system, "Acme Corp");
    system.slow_down("/api/1.0/tasks", 200);
    let before = alice_requests(&system);
    // One channel, as a caller would hold it: its calls share one HTTP/2 connection.
    let executor = system.executor();
    let calls = (0..500).map(|i| {
        let mut client = executor.clone();
        let input = json!({"data": {"name": format!("burst {i}"), "workspace": workspace}});
        async move {
            client
                .execute_tool(request("asana_api_create_task", &input))
                .await
                .map(tonic::Response::into_inner)
        }
    });
    let results = futures::future::join_all(calls).await;

    let mut succeeded = 0;
    for result in &results {
        match result {
            Ok(response) => {
                assert!(!response.is_error, "{}", response.output_json);
                succeeded += 1;
            }
            Err(status) => {
                let delay = retry_delay(status);
                assert!(
                    delay > Duration::from_secs(40) && delay <= Duration::from_secs(60),
                    "come back when the minute's first requests leave the window: {delay:?}"
                );
            }
        }
    }
    assert_eq!(
        succeeded, 150,
        "the free budget's 150 go out within the wait; the rest are refused at once"
    );
    let stats = system.token_stats(ALICE_PAT);
    assert_eq!(
        counter(&stats, "peak_in_flight_writes"),
        15,
        "all fifteen slots used, never more: {stats}"
    );
    assert_eq!(counter(&stats, "rate_limited"), 0, "{stats}");
    assert_eq!(counter(&stats, "requests_total") - before, 150, "{stats}");
    let created = system
        .sandbox
        .world()
        .all("task", |t| {
            t["name"].as_str().is_some_and(|n| n.starts_with("burst "))
        })
        .count();
    assert_eq!(
        created, 150,
        "every success is one task, no refusal made one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_stay_within_fifty_in_flight_and_all_succeed_on_a_paid_budget() {
    let system = System::start(Options {
        executor_toml: "[connections.asana-pat]\nrequests_per_minute = 1500\n".into(),
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    system.slow_down("/api/1.0/users", 300);
    let before = alice_requests(&system);
    let executor = system.executor();
    let calls = (0..200).map(|_| {
        let mut client = executor.clone();
        async move {
            client
                .execute_tool(request("asana_api_get_user", &json!({"user_gid": "me"})))
                .await
                .map(tonic::Response::into_inner)
        }
    });
    for result in futures::future::join_all(calls).await {
        let response = result.expect("every read is served");
        assert!(!response.is_error, "{}", response.output_json);
    }
    let stats = system.token_stats(ALICE_PAT);
    assert_eq!(
        counter(&stats, "peak_in_flight_reads"),
        50,
        "all fifty slots used, never more: {stats}"
    );
    assert_eq!(counter(&stats, "rate_limited"), 0, "{stats}");
    assert_eq!(counter(&stats, "requests_total") - before, 200, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_makes_the_whole_token_wait_out_retry_after() {
    let system = System::start(Options::default()).await;
    system.connect_pat("alice", ALICE_PAT).await;
    system.connect_pat("bob", BOB_PAT).await;
    let before = alice_requests(&system);
    system.sandbox.0.faults.lock().expect("faults").push(Fault {
        path_prefix: "/api/1.0/users".into(),
        latency_ms: 0,
        status: Some(429),
        times: Some(1),
    });

    let refused = system
        .execute(
            "asana-pat",
            "alice",
            "asana_api_get_user",
            json!({"user_gid": "me"}),
        )
        .await
        .expect_err("Asana's Retry-After (30 s) is beyond the wait");
    let delay = retry_delay(&refused);
    assert!(
        delay > Duration::from_secs(25) && delay <= Duration::from_secs(30),
        "{delay:?}"
    );
    assert_eq!(alice_requests(&system), before + 1);

    // Another tool, a write too: the token as a whole waits, and nothing reaches Asana.
    let workspace = workspace(&system, "Acme Corp");
    for (tool, input) in [
        ("asana_api_get_workspaces", json!({})),
        (
            "asana_api_create_task",
            json!({"data": {"name": "during back-off", "workspace": workspace}}),
        ),
    ] {
        let refused = system
            .execute("asana-pat", "alice", tool, input)
            .await
            .expect_err("backing off");
        // Refused, not waited for: the back-off's 30 s are nearly all still to come.
        let delay = retry_delay(&refused);
        assert!(delay <= Duration::from_secs(30), "{delay:?}");
        assert!(delay > Duration::from_secs(20), "{delay:?}");
    }
    assert_eq!(
        alice_requests(&system),
        before + 1,
        "no request during the back-off"
    );

    // Each refusal is audited as denied by a rate limit.
    let denied = rate_limited_events(&system, 3).await;
    assert_eq!(denied[0]["status"], 429, "{denied:?}");
    for details in &denied {
        assert_eq!(details["error_reason"], "RATE_LIMITED", "{details}");
    }

    // Another user's token has its own budget.
    let bob = system
        .execute(
            "asana-pat",
            "bob",
            "asana_api_get_user",
            json!({"user_gid": "me"}),
        )
        .await
        .expect("bob is not backing off");
    assert!(!bob.is_error, "{}", bob.output_json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_retry_after_is_waited_out_within_the_deadline_then_the_read_is_sent_again() {
    let system = System::start(Options::default()).await;
    system.connect_pat("alice", ALICE_PAT).await;
    let before = alice_requests(&system);
    // No read may be in flight at the sandbox: the first read gets 429 with Retry-After: 1.
    system.sandbox.0.limits.configure(LimitConfig {
        max_reads_in_flight: 0,
        ..LimitConfig::default()
    });
    let started = Instant::now();
    let call = tokio::spawn({
        let mut client = system.executor();
        async move {
            client
                .execute_tool(request("asana_api_get_user", &json!({"user_gid": "me"})))
                .await
        }
    });
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async { counter(&system.token_stats(ALICE_PAT), "rate_limited") == 1 },
        "the sandbox answers the first read with 429"
    );
    let stats = system.token_stats(ALICE_PAT);
    assert_eq!(counter(&stats, "requests_total"), before + 1, "{stats}");
    system.sandbox.0.limits.configure(LimitConfig::default());

    let response = call
        .await
        .expect("joined")
        .expect("served after the back-off")
        .into_inner();
    assert!(!response.is_error, "{}", response.output_json);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited out Retry-After: {:?}",
        started.elapsed()
    );
    let stats = system.token_stats(ALICE_PAT);
    assert_eq!(
        counter(&stats, "requests_total"),
        before + 2,
        "one 429, then one request after the back-off: {stats}"
    );
    assert_eq!(counter(&stats, "rate_limited"), 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_deadline_shorter_than_the_wait_is_refused_at_once() {
    let system = System::start(Options {
        executor_toml:
            "[limits]\nmax_wait = \"120s\"\n\n[connections.asana-pat]\nrequests_per_minute = 2\n"
                .into(),
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    let before = alice_requests(&system);
    for _ in 0..2 {
        system
            .execute(
                "asana-pat",
                "alice",
                "asana_api_get_user",
                json!({"user_gid": "me"}),
            )
            .await
            .expect("within the budget");
    }
    let mut third = tonic::Request::new(request("asana_api_get_user", &json!({"user_gid": "me"})));
    third.set_timeout(Duration::from_secs(5));
    let refused = system
        .executor()
        .execute_tool(third)
        .await
        .expect_err("the next slot is a minute away");
    // RESOURCE_EXHAUSTED with the time to the next slot, not DEADLINE_EXCEEDED at 5 s.
    let delay = retry_delay(&refused);
    assert!(
        delay > Duration::from_secs(50) && delay <= Duration::from_secs(60),
        "{delay:?}"
    );
    assert_eq!(alice_requests(&system), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_from_the_mcp_server_makes_the_token_back_off() {
    let system = System::start(Options::default()).await;
    // Two accounts, two grants: one whose session is open, one about to open its session.
    for identifier in ["warm", "fresh"] {
        system.connect_oauth("asana-mcp", identifier).await;
    }
    let get_me =
        |identifier: &'static str| system.execute("asana-mcp", identifier, "get_me", json!({}));
    get_me("warm").await.expect("the session opens");
    let rate_limit_next_mcp_request = || {
        system.sandbox.0.faults.lock().expect("faults").push(Fault {
            path_prefix: "/v2/mcp".into(),
            latency_ms: 0,
            status: Some(429),
            times: Some(1),
        });
    };

    // tools/call gets the 429 (warm), then tools/list does (fresh).
    for identifier in ["warm", "fresh"] {
        let token = system.access_token("asana-mcp", identifier).await;
        let requests = || {
            system.token_stats(&token)["requests_total"]
                .as_u64()
                .unwrap_or(0)
        };
        rate_limit_next_mcp_request();
        let refused = get_me(identifier).await.expect_err("Retry-After: 30");
        let delay = retry_delay(&refused);
        assert!(
            delay > Duration::from_secs(25) && delay <= Duration::from_secs(30),
            "{identifier}: {delay:?}"
        );
        let before = requests();
        assert!(before >= 1, "{identifier}: the 429 came from the sandbox");
        let refused = get_me(identifier)
            .await
            .err()
            .unwrap_or_else(|| panic!("{identifier}: backing off"));
        assert!(
            retry_delay(&refused) > Duration::from_secs(20),
            "{identifier}"
        );
        assert_eq!(
            requests(),
            before,
            "{identifier}: nothing sent during the back-off"
        );
    }
}

/// A burst of 300 writes for alice spread over three connector-executor replicas: what the
/// sandbox counted for her token.
async fn burst_over_three_replicas(limits_toml: &str) -> Value {
    let system = System::start(Options {
        executor_replicas: 3,
        executor_toml: limits_toml.to_owned(),
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    let workspace = workspace(&system, "Acme Corp");
    system.slow_down("/api/1.0/tasks", 200);
    let before = alice_requests(&system);
    let replicas: Vec<_> = (0..3).map(|r| system.executor_replica(r)).collect();
    let calls = (0..300).map(|i| {
        let mut client = replicas[i % 3].clone();
        let input = json!({"data": {"name": format!("shared {i}"), "workspace": workspace}});
        async move {
            client
                .execute_tool(request("asana_api_create_task", &input))
                .await
                .map(tonic::Response::into_inner)
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut stats = system.token_stats(ALICE_PAT);
    stats["sent"] = json!(counter(&stats, "requests_total") - before);
    stats["succeeded"] = json!(results.iter().filter(|r| r.is_ok()).count());
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        let delay = retry_delay(status);
        assert!(delay <= Duration::from_secs(60), "{delay:?}");
    }
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sharing_redis_hold_one_tokens_limits_where_their_own_would_not() {
    let shared = burst_over_three_replicas(&format!(
        "[limits.shared]\nurl = {:?}\nkey_prefix = {:?}\nreplicas = 3\n",
        agentauth_testkit::redis::shared_url(),
        agentauth_testkit::redis::fresh_prefix(),
    ))
    .await;
    assert_eq!(counter(&shared, "succeeded"), 150, "one budget: {shared}");
    assert_eq!(counter(&shared, "sent"), 150, "{shared}");
    assert_eq!(
        counter(&shared, "peak_in_flight_writes"),
        15,
        "fifteen in flight across the replicas, never more: {shared}"
    );
    assert_eq!(counter(&shared, "rate_limited"), 0, "{shared}");

    // The baseline: each replica's own limiter gives the token three times its budget.
    let own = burst_over_three_replicas("").await;
    assert!(
        counter(&own, "peak_in_flight_writes") > 15 || counter(&own, "rate_limited") > 0,
        "per-replica limiters overrun Asana's limits: {own}"
    );
}
