//! Event subscriptions against the sandbox's real webhooks: the handshake answered by another
//! replica while Asana's create call is open, signed deliveries of task changes reaching
//! `SubscribeEvents`, resumption from a cursor, refusals that change nothing, tenants apart,
//! and the secret nowhere but Vault.

use std::collections::HashSet;
use std::time::Duration;

use agentauth_proto::executor::v1 as pb;
use agentauth_testkit::assert_eventually;
use asana_sandbox::seed::ALICE_PAT;
use futures::StreamExt as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tonic::Code;

use crate::system::{OTHER_TENANT, Options, System, TENANT};

const WITHIN: Duration = Duration::from_secs(15);

/// The seeded task "Book the venue" and its project.
fn venue(system: &System) -> (String, String) {
    let world = system.sandbox.world();
    let task = world
        .all("task", |t| t["name"] == "Book the venue")
        .next()
        .expect("seeded task")
        .clone();
    (
        task["projects"][0]["gid"]
            .as_str()
            .expect("project")
            .to_owned(),
        task["gid"].as_str().expect("gid").to_owned(),
    )
}

/// The system with webhooks on (and `options` otherwise), alice's PAT connected on
/// `asana-pat`, and the seeded task "Book the venue" with its project.
async fn started(options: Options) -> (System, String, String) {
    let system = System::start(Options {
        webhooks: true,
        ..options
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    let (project, task) = venue(&system);
    (system, project, task)
}

/// Whether the sandbox still has the webhook `gid`.
fn sandbox_has_webhook(system: &System, gid: &str) -> bool {
    system
        .sandbox
        .world()
        .all("webhook", |w| w["gid"] == gid)
        .next()
        .is_some()
}

/// The target the sandbox's webhook `gid` posts to: the intake, with the key only Asana was
/// given.
fn sandbox_target(system: &System, gid: &str) -> String {
    system
        .sandbox
        .world()
        .all("webhook", |w| w["gid"] == gid)
        .next()
        .and_then(|w| w["target"].as_str().map(str::to_owned))
        .expect("the sandbox's webhook")
}

/// The sandbox's secret of the webhook `gid`, which signs its deliveries.
fn sandbox_secret(system: &System, gid: &str) -> String {
    system
        .sandbox
        .world()
        .all("webhook", |w| w["gid"] == gid)
        .next()
        .and_then(|w| w["_sandbox_secret"].as_str().map(str::to_owned))
        .expect("the sandbox's webhook")
}

async fn subscribe(system: &System, replica: usize, resource: &str) -> pb::EventSubscription {
    system
        .executor_replica(replica)
        .create_event_subscription(pb::CreateEventSubscriptionRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            resource_gid: resource.into(),
            filters_json: json!([{"resource_type": "task", "action": "changed"}]).to_string(),
        })
        .await
        .expect("subscribed")
        .into_inner()
        .subscription
        .expect("subscription")
}

async fn follow(
    system: &System,
    replica: usize,
    cursor: Option<String>,
) -> tonic::Streaming<pb::SubscribeEventsResponse> {
    system
        .executor_replica(replica)
        .subscribe_events(pb::SubscribeEventsRequest {
            tenant: TENANT.into(),
            cursor,
            ..Default::default()
        })
        .await
        .expect("subscribe events")
        .into_inner()
}

/// The next event of `stream` that sets a task's notes to `text`.
async fn next_note(
    stream: &mut tonic::Streaming<pb::SubscribeEventsResponse>,
    text: &str,
) -> pb::SubscribeEventsResponse {
    tokio::time::timeout(WITHIN, async {
        loop {
            let message = stream
                .next()
                .await
                .expect("the stream stays open")
                .expect("an event");
            let event = message.event.as_ref().expect("event");
            let change: Value = serde_json::from_str(&event.change_json).unwrap_or_default();
            if change["field"] == "notes" && change["new_value"] == text {
                return message;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event for the note {text:?}"))
}

async fn write_note(system: &System, task: &str, text: &str) {
    let answer = system
        .execute(
            "asana-pat",
            "alice",
            "asana_task_update",
            json!({"task_gid": task, "notes": text}),
        )
        .await
        .expect("updated");
    assert!(!answer.is_error, "{}", answer.output_json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_change_reaches_a_subscriber_who_resumes_from_its_cursor_on_sqlite() {
    a_task_change_reaches_a_subscriber_who_resumes_from_its_cursor(false).await;
}

/// On PostgreSQL the other replica's stream is woken by `LISTEN/NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_change_reaches_a_subscriber_who_resumes_from_its_cursor_on_postgres() {
    a_task_change_reaches_a_subscriber_who_resumes_from_its_cursor(true).await;
}

/// Each event once, in order, wherever the subscriber reconnects.
async fn a_task_change_reaches_a_subscriber_who_resumes_from_its_cursor(postgres: bool) {
    let (system, project, task) = started(Options {
        executor_replicas: 2,
        database_postgres: postgres,
        ..Options::default()
    })
    .await;
    let mut stream = follow(&system, 0, None).await;

    // Created through replica 0, whose public URL is replica 1's intake: the handshake was
    // answered there while the create call was open.
    let subscription = subscribe(&system, 0, &project).await;
    assert_eq!(subscription.state(), pb::EventSubscriptionState::Active);
    assert!(!subscription.webhook_gid.is_empty());
    assert!(
        subscription.last_heartbeat_at.is_some(),
        "the handshake counts"
    );
    assert_eq!(subscription.resource_gid, project);

    write_note(&system, &task, "first").await;
    let first = next_note(&mut stream, "first").await;
    let event = first.event.as_ref().expect("event");
    assert_eq!(event.subscription_id, subscription.subscription_id);
    assert_eq!(event.webhook_gid, subscription.webhook_gid);
    assert_eq!(event.resource_gid, task);
    assert_eq!(event.resource_type, "task");
    assert_eq!(event.action, "changed");
    assert_eq!(event.connection_name, "asana-pat");
    assert_eq!(event.identifier, "alice");
    assert!(event.created_at.is_some() && event.received_at.is_some());
    drop(stream);
    let metrics = reqwest::get(format!("{}/metrics", system.webhook_urls[0]))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|l| l
            .strip_prefix("agentauth_webhook_delivery_lag_seconds_count ")
            .is_some_and(|n| n != "0")),
        "the stream's delivery lag is measured:\n{metrics}"
    );

    // While nobody listens, events keep arriving; the subscriber resumes on the other replica
    // from its cursor and gets each once, in order.
    write_note(&system, &task, "second").await;
    write_note(&system, &task, "third").await;
    let mut resumed = follow(&system, 1, Some(first.cursor.clone())).await;
    let second = next_note(&mut resumed, "second").await;
    let third = next_note(&mut resumed, "third").await;
    let position = |m: &pb::SubscribeEventsResponse| {
        m.cursor
            .trim_start_matches("ev1.")
            .parse::<u64>()
            .expect("position")
    };
    assert!(position(&first) < position(&second) && position(&second) < position(&third));

    // Replayed again from the first cursor: the same events, no duplicates, nothing else.
    let mut replay = follow(&system, 0, Some(first.cursor.clone())).await;
    let mut seen = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(1500), replay.next()).await
    {
        seen.push(message.event.expect("event").event_id);
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "each event once: {seen:?}");
    for expected in [&second, &third] {
        assert!(seen.contains(&expected.event.as_ref().expect("event").event_id));
    }
    assert!(
        !seen.contains(&event.event_id),
        "nothing at or before the cursor"
    );

    let listed = system
        .executor()
        .list_event_subscriptions(pb::ListEventSubscriptionsRequest {
            tenant: TENANT.into(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].events_received >= 3, "{listed:?}");
    assert!(listed[0].last_delivery_at.is_some());

    let audit = system.audit_events(TENANT).await;
    assert!(
        audit.iter().any(|e| e.action == "webhook.subscribed"
            && e.outcome() == agentauth_proto::audit::v1::Outcome::Success
            && e.details_json.contains(&subscription.subscription_id)),
        "the subscription is audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_altered_oversized_and_unknown_deliveries_are_refused_and_change_nothing() {
    let (system, project, task) = started(Options::default()).await;
    let subscription = subscribe(&system, 0, &project).await;
    let secret = sandbox_secret(&system, &subscription.webhook_gid);
    let intake = sandbox_target(&system, &subscription.webhook_gid);
    let without_key = format!(
        "{}/webhooks/{}",
        system.webhook_urls[0], subscription.subscription_id
    );
    assert!(intake.starts_with(&format!("{without_key}/")), "{intake}");
    // A connection per request: the oversized one is answered 413 before its body is read
    // and closed, which a pooled connection would carry into the next request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let sign = |key: &str, body: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    };
    let body = json!({"events": [{
        "user": {"gid": "1", "resource_type": "user"},
        "created_at": "2026-12-07T00:00:00.000Z",
        "action": "changed",
        "resource": {"gid": task, "resource_type": "task"},
        "parent": null,
        "change": {"field": "notes", "action": "changed", "new_value": "forged"}
    }]})
    .to_string();
    let altered = body.replace("forged", "altered");
    let post = |url: String, signature: Option<String>, body: Vec<u8>| {
        let mut request = http.post(url).body(body);
        if let Some(signature) = signature {
            request = request.header("X-Hook-Signature", signature);
        }
        async move {
            request
                .send()
                .await
                .expect("the intake answers")
                .status()
                .as_u16()
        }
    };
    let received = || async {
        system
            .executor()
            .list_event_subscriptions(pb::ListEventSubscriptionsRequest {
                tenant: TENANT.into(),
                ..Default::default()
            })
            .await
            .expect("listed")
            .into_inner()
            .subscriptions[0]
            .events_received
    };
    let before = received().await;

    let signed = sign(&secret, body.as_bytes());
    let oversized = vec![b' '; 2 * 1024 * 1024];
    let hook = |path: &str| format!("{}/webhooks/{path}", system.webhook_urls[0]);
    let refusals = [
        ("unsigned", intake.clone(), None, body.clone().into(), 401),
        (
            "signed with another key",
            intake.clone(),
            Some(sign("not the secret", body.as_bytes())),
            body.clone().into(),
            401,
        ),
        (
            "altered after signing",
            intake.clone(),
            Some(signed.clone()),
            altered.clone().into(),
            401,
        ),
        (
            "not hex",
            intake.clone(),
            Some("zz".into()),
            body.clone().into(),
            401,
        ),
        (
            "signed but not JSON",
            intake.clone(),
            Some(sign(&secret, b"not json")),
            b"not json".to_vec(),
            400,
        ),
        (
            "oversized",
            intake.clone(),
            Some(sign(&secret, &oversized)),
            oversized.clone(),
            413,
        ),
        (
            "unknown subscription",
            hook("0190a000-0000-7000-8000-000000000001/key"),
            Some(signed.clone()),
            body.clone().into(),
            404,
        ),
        (
            "not a subscription id",
            hook("..%2f..%2fetc/key"),
            Some(signed.clone()),
            body.clone().into(),
            404,
        ),
        (
            "the subscription without its key",
            without_key.clone(),
            Some(signed.clone()),
            body.clone().into(),
            404,
        ),
        (
            "the subscription with another key",
            format!("{without_key}/guessed"),
            Some(signed.clone()),
            body.clone().into(),
            404,
        ),
    ];
    for (what, url, signature, payload, expected) in refusals {
        assert_eq!(post(url, signature, payload).await, expected, "{what}");
    }
    // Knowing the subscription id (callers see it) is not enough to offer a handshake: only
    // the target Asana was given, key included, takes one.
    let guessed = http
        .post(format!("{without_key}/guessed"))
        .header("X-Hook-Secret", "attacker-chosen")
        .send()
        .await
        .expect("answers");
    assert_eq!(guessed.status().as_u16(), 404);
    // A second handshake would replace the secret: only the first one is taken.
    let handshake = http
        .post(&intake)
        .header("X-Hook-Secret", "attacker-chosen")
        .send()
        .await
        .expect("answers");
    assert_eq!(handshake.status().as_u16(), 403);
    assert!(handshake.headers().get("X-Hook-Secret").is_none());
    assert_eq!(received().await, before, "no refused delivery was stored");

    // The real signature over the same body is accepted, and a redelivery stores nothing.
    let signature = sign(&secret, body.as_bytes());
    assert_eq!(
        post(intake.clone(), Some(signature.clone()), body.clone().into()).await,
        200
    );
    assert_eq!(received().await, before + 1);
    assert_eq!(
        post(intake.clone(), Some(signature), body.clone().into()).await,
        200
    );
    assert_eq!(received().await, before + 1, "a redelivery is deduplicated");
    assert_eq!(
        post(
            intake.clone(),
            Some(sign(&secret, br#"{"events": []}"#)),
            br#"{"events": []}"#.to_vec()
        )
        .await,
        200,
        "a heartbeat"
    );

    // The intake's counters say the same.
    let metrics = http
        .get(format!("{}/metrics", system.webhook_urls[0]))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "agentauth_webhook_handshakes_total 1",
        "agentauth_webhook_deliveries_total 2",
        "agentauth_webhook_events_stored_total 1",
        "agentauth_webhook_events_duplicate_total 1",
        "agentauth_webhook_heartbeats_total 1",
        "agentauth_webhook_refused_total{reason=\"bad_signature\"} 4",
        "agentauth_webhook_refused_total{reason=\"malformed\"} 1",
        "agentauth_webhook_refused_total{reason=\"handshake_refused\"} 1",
        "agentauth_webhook_refused_total{reason=\"unknown_subscription\"} 4",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert_eventually!(
        WITHIN,
        async {
            system
                .audit_events(TENANT)
                .await
                .iter()
                .filter(|e| {
                    e.action == "webhook.refused"
                        && e.outcome() == agentauth_proto::audit::v1::Outcome::Denied
                })
                .count()
                >= 5
        },
        "refusals of a known subscription are audited"
    );

    // The secret is in Vault only: not in connector-executor's database, not in the audit
    // trail, not in any answer.
    let database = system
        .executor_database_url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .expect("path")
        .to_owned();
    let mut stored = std::fs::read(&database).expect("the database file");
    if let Ok(wal) = std::fs::read(format!("{database}-wal")) {
        stored.extend(wal);
    }
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is not in the database"
    );
    for event in system.audit_events(TENANT).await {
        assert!(!format!("{event:?}").contains(&secret), "{event:?}");
    }
    assert!(!format!("{subscription:?}").contains(&secret));

    // Deleted: Asana's webhook is gone and the intake refuses what its secret signs.
    let deleted = system
        .executor()
        .delete_event_subscription(pb::DeleteEventSubscriptionRequest {
            tenant: TENANT.into(),
            subscription_id: subscription.subscription_id.clone(),
        })
        .await
        .expect("deleted")
        .into_inner();
    assert!(!deleted.already_deleted);
    assert_eq!(
        deleted.subscription.expect("subscription").state(),
        pb::EventSubscriptionState::Deleted
    );
    assert!(
        !sandbox_has_webhook(&system, &subscription.webhook_gid),
        "the Asana webhook is deleted"
    );
    assert_eq!(
        post(
            intake.clone(),
            Some(sign(&secret, altered.as_bytes())),
            altered.into()
        )
        .await,
        404
    );
    let again = system
        .executor()
        .delete_event_subscription(pb::DeleteEventSubscriptionRequest {
            tenant: TENANT.into(),
            subscription_id: subscription.subscription_id.clone(),
        })
        .await
        .expect("idempotent")
        .into_inner();
    assert!(again.already_deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_events_are_kept_apart_by_tenant_and_bad_requests_are_refused() {
    let (system, project, task) = started(Options::default()).await;
    let subscription = subscribe(&system, 0, &project).await;
    let mut globex = system.executor_as(&system.other_tenant_agent);

    let foreign = globex
        .subscribe_events(pb::SubscribeEventsRequest {
            tenant: TENANT.into(),
            ..Default::default()
        })
        .await
        .expect_err("another tenant's events");
    assert_eq!(foreign.code(), Code::PermissionDenied);
    let not_theirs = globex
        .delete_event_subscription(pb::DeleteEventSubscriptionRequest {
            tenant: OTHER_TENANT.into(),
            subscription_id: subscription.subscription_id.clone(),
        })
        .await
        .expect_err("acme's subscription is no globex one");
    assert_eq!(not_theirs.code(), Code::NotFound);
    let listed = globex
        .list_event_subscriptions(pb::ListEventSubscriptionsRequest {
            tenant: OTHER_TENANT.into(),
            include_ended: true,
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert!(listed.subscriptions.is_empty());

    let mut own = globex
        .subscribe_events(pb::SubscribeEventsRequest {
            tenant: OTHER_TENANT.into(),
            ..Default::default()
        })
        .await
        .expect("own events")
        .into_inner();
    write_note(&system, &task, "acme only").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), own.next())
            .await
            .is_err(),
        "an acme event never reaches globex"
    );

    let mut client = system.executor();
    for (request, field) in [
        (
            pb::CreateEventSubscriptionRequest {
                resource_gid: "../../x".into(),
                ..valid(&project)
            },
            "resource_gid",
        ),
        (
            pb::CreateEventSubscriptionRequest {
                filters_json: "{\"not\": \"an array\"}".into(),
                ..valid(&project)
            },
            "filters_json",
        ),
    ] {
        let refused = client
            .create_event_subscription(request)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains(field), "{refused:?}");
    }
    let missing = client
        .create_event_subscription(pb::CreateEventSubscriptionRequest {
            resource_gid: "9999999999".into(),
            ..valid(&project)
        })
        .await
        .expect_err("Asana refuses an unknown resource");
    assert_eq!(missing.code(), Code::FailedPrecondition, "{missing:?}");
    let expired = client
        .subscribe_events(pb::SubscribeEventsRequest {
            tenant: TENANT.into(),
            cursor: Some("not a cursor".into()),
            ..Default::default()
        })
        .await
        .expect_err("a bad cursor");
    assert_eq!(expired.code(), Code::InvalidArgument);
    let failed = client
        .list_event_subscriptions(pb::ListEventSubscriptionsRequest {
            tenant: TENANT.into(),
            include_ended: true,
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner()
        .subscriptions;
    assert!(
        failed.iter().any(
            |s| s.state() == pb::EventSubscriptionState::Failed && !s.failure_reason.is_empty()
        ),
        "{failed:?}"
    );
}

fn valid(project: &str) -> pb::CreateEventSubscriptionRequest {
    pb::CreateEventSubscriptionRequest {
        tenant: TENANT.into(),
        connection_name: "asana-pat".into(),
        identifier: "alice".into(),
        resource_gid: project.into(),
        filters_json: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_asana_deleted_is_recreated_and_the_events_it_missed_are_back_filled_once() {
    let (system, project, task) = started(Options {
        webhooks_toml: "health_interval = \"300ms\"\nbackfill_grace = \"2s\"".into(),
        sandbox_webhook_failure_window: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let mut stream = follow(&system, 0, None).await;
    let subscription = subscribe(&system, 0, &project).await;

    write_note(&system, &task, "delivered").await;
    let delivered = next_note(&mut stream, "delivered").await;
    assert!(!delivered.event.expect("event").backfilled);

    // The webhook's target stops answering: the sandbox retries, then deletes the webhook, and
    // the event it was trying to deliver is lost to the webhook.
    system
        .sandbox
        .world()
        .get_mut(&subscription.webhook_gid)
        .expect("the sandbox's webhook")["target"] = json!("http://127.0.0.1:9/gone");
    write_note(&system, &task, "missed").await;
    assert_eventually!(
        WITHIN,
        async { !sandbox_has_webhook(&system, &subscription.webhook_gid) },
        "the sandbox deletes the failing webhook"
    );

    // agentauth re-creates it and back-fills what it missed, marked as such.
    let missed = next_note(&mut stream, "missed").await;
    assert!(
        missed.event.as_ref().expect("event").backfilled,
        "{missed:?}"
    );
    write_note(&system, &task, "after the repair").await;
    let after = next_note(&mut stream, "after the repair").await;
    assert!(!after.event.expect("event").backfilled);

    let listed = system
        .executor()
        .list_event_subscriptions(pb::ListEventSubscriptionsRequest {
            tenant: TENANT.into(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner()
        .subscriptions;
    let repaired = &listed[0];
    assert_eq!(repaired.state(), pb::EventSubscriptionState::Active);
    assert_ne!(
        repaired.webhook_gid, subscription.webhook_gid,
        "a new webhook"
    );
    assert!(repaired.repaired_at.is_some() && repaired.last_checked_at.is_some());

    // Each event once: replayed from before the first, "missed" is there a single time.
    let mut replay = follow(&system, 0, Some("ev1.0".into())).await;
    let mut notes = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(1500), replay.next()).await
    {
        let change: Value =
            serde_json::from_str(&message.event.expect("event").change_json).unwrap_or_default();
        if change["field"] == "notes" {
            notes.push(change["new_value"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        notes.iter().filter(|n| *n == "missed").count(),
        1,
        "{notes:?}"
    );
    assert_eq!(
        notes.iter().filter(|n| *n == "delivered").count(),
        1,
        "{notes:?}"
    );

    let audit = system.audit_events(TENANT).await;
    for (action, what) in [
        ("webhook.repaired", "the repair"),
        ("webhook.backfilled", "the gap-fill"),
    ] {
        assert!(
            audit.iter().any(|e| e.action == action
                && e.outcome() == agentauth_proto::audit::v1::Outcome::Success),
            "{what} is audited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asana_webhook_create_through_execute_tool_registers_a_subscription_and_never_returns_the_secret()
 {
    let (system, project, task) = started(Options::default()).await;
    let mut stream = follow(&system, 0, None).await;
    let created = system
        .execute(
            "asana-pat",
            "alice",
            "asana_webhook_create",
            json!({"resource": project, "target": "https://example.com/hooks/asana",
                   "filters": [{"resource_type": "task", "action": "changed"}]}),
        )
        .await
        .expect("created");
    assert!(!created.is_error, "{}", created.output_json);
    let output: Value = serde_json::from_str(&created.output_json).expect("JSON");
    let subscription_id = output["subscription_id"].as_str().expect("a subscription");
    let webhook_gid = output["gid"].as_str().expect("webhook gid");
    let target = sandbox_target(&system, webhook_gid);
    assert!(
        target.starts_with(&format!(
            "{}/webhooks/{subscription_id}/",
            system.webhook_urls[0]
        )),
        "the intake, not the caller's target: {target}"
    );
    let key = target.rsplit('/').next().expect("the key");
    assert!(
        !created.output_json.contains(key),
        "the target's key is Asana's alone"
    );
    let secret = sandbox_secret(&system, webhook_gid);
    assert!(
        !created.output_json.contains(&secret),
        "no secret in the answer"
    );
    assert!(
        !created
            .output_json
            .to_ascii_lowercase()
            .contains("x-hook-secret")
    );

    write_note(&system, &task, "via ExecuteTool").await;
    let event = next_note(&mut stream, "via ExecuteTool").await;
    assert_eq!(event.event.expect("event").subscription_id, subscription_id);

    let refused = system
        .execute(
            "asana-pat",
            "alice",
            "asana_webhook_create",
            json!({"resource": "9999999999", "target": "https://example.com/hooks/asana"}),
        )
        .await
        .expect("a tool error, not an RPC error");
    assert!(refused.is_error, "{}", refused.output_json);
    assert!(
        refused.output_json.contains("errors"),
        "{}",
        refused.output_json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_subscription_has_no_webhook_and_resumed_it_catches_up_on_what_happened_meanwhile()
{
    let (system, project, task) = started(Options {
        webhooks_toml: "health_interval = \"300ms\"\nbackfill_grace = \"1s\"".into(),
        ..Options::default()
    })
    .await;
    let mut stream = follow(&system, 0, None).await;
    let subscription = subscribe(&system, 0, &project).await;
    let id = subscription.subscription_id.clone();
    let mut client = system.executor();

    let paused = client
        .pause_event_subscription(pb::PauseEventSubscriptionRequest {
            tenant: TENANT.into(),
            subscription_id: id.clone(),
        })
        .await
        .expect("paused")
        .into_inner();
    assert!(!paused.unchanged);
    assert_eq!(
        paused.subscription.expect("subscription").state(),
        pb::EventSubscriptionState::Paused
    );
    assert!(
        !sandbox_has_webhook(&system, &subscription.webhook_gid),
        "no webhook while paused"
    );
    let again = client
        .pause_event_subscription(pb::PauseEventSubscriptionRequest {
            tenant: TENANT.into(),
            subscription_id: id.clone(),
        })
        .await
        .expect("idempotent")
        .into_inner();
    assert!(again.unchanged);

    write_note(&system, &task, "while paused").await;
    let resumed = client
        .resume_event_subscription(pb::ResumeEventSubscriptionRequest {
            tenant: TENANT.into(),
            subscription_id: id.clone(),
        })
        .await
        .expect("resumed")
        .into_inner();
    assert!(!resumed.unchanged);
    let resumed = resumed.subscription.expect("subscription");
    assert_eq!(resumed.state(), pb::EventSubscriptionState::Active);
    assert_ne!(resumed.webhook_gid, subscription.webhook_gid);

    let caught_up = next_note(&mut stream, "while paused").await;
    assert!(caught_up.event.expect("event").backfilled);
    write_note(&system, &task, "after resuming").await;
    let live = next_note(&mut stream, "after resuming").await;
    assert!(!live.event.expect("event").backfilled);

    let audit = system.audit_events(TENANT).await;
    for action in ["webhook.paused", "webhook.resumed"] {
        assert!(
            audit.iter().any(|e| e.action == action),
            "{action} is audited"
        );
    }
    let foreign = system
        .executor_as(&system.other_tenant_agent)
        .pause_event_subscription(pb::PauseEventSubscriptionRequest {
            tenant: OTHER_TENANT.into(),
            subscription_id: id,
        })
        .await
        .expect_err("another tenant's subscription");
    assert_eq!(foreign.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_old_cursors_and_a_sync_token_asana_refuses_is_recorded_as_a_lost_gap() {
    let (system, project, task) = started(Options {
        webhooks_toml: "retention = \"1s\"\nhealth_interval = \"300ms\"".into(),
        ..Options::default()
    })
    .await;
    let mut stream = follow(&system, 0, None).await;
    let subscription = subscribe(&system, 0, &project).await;
    write_note(&system, &task, "soon gone").await;
    next_note(&mut stream, "soon gone").await;

    // Past retention the event is removed, and a cursor from before it is out of range.
    let mut client = system.executor();
    let mut expired = None;
    for _ in 0..100 {
        match client
            .subscribe_events(pb::SubscribeEventsRequest {
                tenant: TENANT.into(),
                cursor: Some("ev1.0".into()),
                ..Default::default()
            })
            .await
        {
            Err(status) => {
                expired = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let expired = expired.expect("the cursor expires once retention removed events");
    assert_eq!(expired.code(), Code::OutOfRange, "{expired:?}");
    // A sync token Asana no longer honours: replaced, and the loss recorded.
    let database = agentauth_db::Database::connect_lazy(&agentauth_db::Config::new(
        &system.executor_database_url,
    ))
    .expect("the executor's database");
    sqlx::query("UPDATE event_subscriptions SET sync_token = 'expired' WHERE subscription_id = $1")
        .bind(&subscription.subscription_id)
        .execute(database.pool())
        .await
        .expect("the token aged");
    assert_eventually!(
        WITHIN,
        async {
            client
                .list_event_subscriptions(pb::ListEventSubscriptionsRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                })
                .await
                .expect("listed")
                .into_inner()
                .subscriptions[0]
                .gap_lost_at
                .is_some()
        },
        "the lost gap is reported"
    );
    assert_eventually!(
        WITHIN,
        async {
            system
                .audit_events(TENANT)
                .await
                .iter()
                .any(|e| e.action == "webhook.gap_lost")
        },
        "and audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_bound_to_some_connections_sees_and_touches_only_their_subscriptions_and_events() {
    let (system, project, task) = started(Options::default()).await;
    system.connect_oauth("asana", "alice").await;
    let on_pat = subscribe(&system, 0, &project).await;
    let on_oauth = system
        .executor()
        .create_event_subscription(pb::CreateEventSubscriptionRequest {
            connection_name: "asana".into(),
            ..valid(&project)
        })
        .await
        .expect("subscribed on asana")
        .into_inner()
        .subscription
        .expect("subscription");
    let mut narrow = system.executor_as(&system.narrow_agent);

    let listed = narrow
        .list_event_subscriptions(pb::ListEventSubscriptionsRequest {
            tenant: TENANT.into(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner()
        .subscriptions;
    let ids: Vec<_> = listed.iter().map(|s| s.subscription_id.as_str()).collect();
    assert_eq!(ids, [on_pat.subscription_id.as_str()]);

    let mut stream = narrow
        .subscribe_events(pb::SubscribeEventsRequest {
            tenant: TENANT.into(),
            ..Default::default()
        })
        .await
        .expect("its events")
        .into_inner();
    write_note(&system, &task, "seen twice, shown once").await;
    let mut subscriptions = HashSet::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(1500), stream.next()).await
    {
        let event = message.event.expect("event");
        assert_eq!(event.connection_name, "asana-pat", "{event:?}");
        subscriptions.insert(event.subscription_id);
    }
    assert_eq!(
        subscriptions,
        HashSet::from([on_pat.subscription_id.clone()]),
        "the asana-pat subscription's events, none of asana's"
    );

    for refused in [
        narrow
            .delete_event_subscription(pb::DeleteEventSubscriptionRequest {
                tenant: TENANT.into(),
                subscription_id: on_oauth.subscription_id.clone(),
            })
            .await
            .expect_err("not its connection"),
        narrow
            .pause_event_subscription(pb::PauseEventSubscriptionRequest {
                tenant: TENANT.into(),
                subscription_id: on_oauth.subscription_id.clone(),
            })
            .await
            .expect_err("not its connection"),
        narrow
            .subscribe_events(pb::SubscribeEventsRequest {
                tenant: TENANT.into(),
                connection_name: Some("asana".into()),
                ..Default::default()
            })
            .await
            .expect_err("not its connection"),
    ] {
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    assert!(sandbox_has_webhook(&system, &on_oauth.webhook_gid));
}
