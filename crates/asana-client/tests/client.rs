//! The client against the real Asana sandbox, in process, plus tiny servers for answers the
//! sandbox does not give (a short `Retry-After`, `Asana-Change` headers).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use asana_client::{AsanaChange, Client, Config, Error, Request, Token};
use asana_sandbox::Sandbox;
use asana_sandbox::seed::{ALICE_PAT, REST_CLIENT_ID};
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

const CONTROL_KEY: &str = "test-control-key";

struct Harness {
    sandbox: Sandbox,
    root: String,
    control: reqwest::Client,
    _stop: DropGuard,
}

impl Harness {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let root = format!("http://{}", listener.local_addr()?);
        let sandbox = Sandbox::new(asana_sandbox::Config {
            control_key: Some(CONTROL_KEY.to_owned()),
            public_url: root.clone(),
            ..Default::default()
        });
        let stop = CancellationToken::new();
        tokio::spawn(sandbox.clone().serve(listener, stop.clone()));
        Ok(Self {
            sandbox,
            root,
            control: reqwest::Client::new(),
            _stop: stop.drop_guard(),
        })
    }

    fn client(&self) -> Result<Client> {
        self.client_with(|_| {})
    }

    fn client_with(&self, change: impl FnOnce(&mut Config)) -> Result<Client> {
        let mut config = fast_config(format!("{}/api/1.0", self.root));
        change(&mut config);
        Ok(Client::new(config)?)
    }

    async fn control(&self, path: &str, body: Value) -> Result<Value> {
        let response = self
            .control
            .post(format!("{}{path}", self.root))
            .header("X-Sandbox-Control-Key", CONTROL_KEY)
            .json(&body)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    async fn fault(&self, path_prefix: &str, status: u16, times: u32) -> Result<()> {
        self.control(
            "/_sandbox/faults",
            json!({"path_prefix": path_prefix, "status": status, "times": times}),
        )
        .await?;
        Ok(())
    }

    async fn faults_left(&self) -> Result<usize> {
        let stats: Value = self
            .control
            .get(format!("{}/_sandbox/stats", self.root))
            .header("X-Sandbox-Control-Key", CONTROL_KEY)
            .send()
            .await?
            .json()
            .await?;
        stats["faults"]
            .as_array()
            .map(Vec::len)
            .context("stats without faults")
    }
}

fn fast_config(base_url: String) -> Config {
    Config {
        base_url,
        timeout: Duration::from_secs(5),
        max_retries: 3,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(10),
        max_retry_wait: Duration::from_secs(5),
        ..Config::default()
    }
}

fn alice() -> Token {
    Token::new(ALICE_PAT)
}

async fn first_workspace(client: &Client, token: &Token) -> Result<String> {
    let workspaces = client.get::<Vec<Value>>(token, "/workspaces", &[]).await?;
    let gid = workspaces.data.first().context("no workspace")?["gid"]
        .as_str()
        .context("workspace without gid")?;
    Ok(gid.to_owned())
}

#[tokio::test]
async fn get_unwraps_the_data_envelope_and_honours_opt_fields() -> Result<()> {
    let harness = Harness::start().await?;
    let client = harness.client()?;
    let me = client.get::<Value>(&alice(), "/users/me", &[]).await?;
    assert_eq!(me.status, 200);
    assert_eq!(me.data["name"], "Alice Example");
    assert!(me.data.get("data").is_none());
    assert!(me.next_page.is_none());

    let request = Request::get("/users/me").opt_fields(["email"]);
    let me = client.send::<Value>(&alice(), request).await?;
    assert_eq!(me.data["email"], "alice@acme.test");
    assert!(me.data.get("name").is_none(), "{}", me.data);
    Ok(())
}

#[tokio::test]
async fn pages_follow_next_page_up_to_the_bound() -> Result<()> {
    let harness = Harness::start().await?;
    let client = harness.client()?;
    let token = alice();
    let workspace = first_workspace(&client, &token).await?;
    let path = format!("/workspaces/{workspace}/users");

    let all = client
        .pages::<Value>(&token, Request::get(&path).query("limit", "1"), 10)
        .collect_all()
        .await?;
    let names: Vec<&str> = all.data.iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"Alice Example") && names.contains(&"Carol Example"));
    assert!(all.next_page.is_none());

    let mut pages = client.pages::<Value>(&token, Request::get(&path).query("limit", "1"), 2);
    let first = pages.next_page().await.context("no first page")??;
    assert_eq!(first.data.len(), 1);
    let next = first.next_page.context("first page without next_page")?;
    assert!(next.path.starts_with(&path) && next.uri.ends_with(&next.path));
    assert!(pages.next_page().await.context("no second page")?.is_ok());
    assert!(
        pages.next_page().await.is_none(),
        "the bound of 2 pages was passed"
    );

    let cut = client
        .pages::<Value>(&token, Request::get(&path).query("limit", "2"), 1)
        .collect_all()
        .await?;
    assert_eq!(cut.data.len(), 2);
    assert!(cut.next_page.is_some(), "a list cut by the bound says so");
    Ok(())
}

#[tokio::test]
async fn asana_errors_are_typed_with_asana_message() -> Result<()> {
    let harness = Harness::start().await?;
    let client = harness.client()?;
    let token = alice();

    let error = client
        .get::<Value>(&token, "/tasks/999999999", &[])
        .await
        .err()
        .context("an unknown task was found")?;
    let Error::NotFound { errors } = &error else {
        anyhow::bail!("expected NotFound, got {error:?}");
    };
    assert!(
        errors[0].message.contains("Not a recognized ID"),
        "{errors:?}"
    );
    assert!(error.to_string().contains("Not a recognized ID"));

    let workspace = first_workspace(&client, &token).await?;
    let error = client
        .get::<Value>(
            &token,
            &format!("/workspaces/{workspace}/users"),
            &[("limit", "1000")],
        )
        .await
        .err()
        .context("limit 1000 was accepted")?;
    let Error::Api {
        status: 400,
        errors,
    } = &error
    else {
        anyhow::bail!("expected a 400, got {error:?}");
    };
    assert!(errors[0].message.contains("limit"), "{errors:?}");
    assert!(error.to_string().contains(&errors[0].message));
    Ok(())
}

#[tokio::test]
async fn paths_leaving_the_api_base_are_refused_before_sending() -> Result<()> {
    let harness = Harness::start().await?;
    let client = harness.client()?;
    for path in [
        "http://evil.test/users/me",
        "/users/../../_sandbox/stats",
        "users/me",
    ] {
        let result = client.get::<Value>(&alice(), path, &[]).await;
        assert!(
            matches!(result, Err(Error::InvalidRequest(_))),
            "{path}: {result:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_and_expired_tokens_are_told_apart_and_never_shown() -> Result<()> {
    let harness = Harness::start().await?;
    let client = harness.client()?;

    let secret = "bad-token-that-must-not-leak";
    let error = client
        .get::<Value>(&Token::new(secret), "/users/me", &[])
        .await
        .err()
        .context("a bad token was accepted")?;
    assert!(
        matches!(error, Error::Unauthorized { expired: false, .. }),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains(secret));
    assert!(!error.to_string().contains(secret));

    let alice_gid = client.get::<Value>(&alice(), "/users/me", &[]).await?.data["gid"]
        .as_str()
        .context("no gid")?
        .to_owned();
    let issued = harness
        .sandbox
        .tokens()
        .grant(REST_CLIENT_ID, &alice_gid, vec!["default".into()]);
    let oauth = Token::new(issued.access_token.clone());
    assert_eq!(format!("{oauth:?}"), "[redacted]");
    client.get::<Value>(&oauth, "/users/me", &[]).await?;
    harness
        .control(
            "/_sandbox/grants/expire",
            json!({"user": alice_gid, "client_id": REST_CLIENT_ID}),
        )
        .await?;
    let error = client
        .get::<Value>(&oauth, "/users/me", &[])
        .await
        .err()
        .context("an expired token was accepted")?;
    assert!(
        matches!(error, Error::Unauthorized { expired: true, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("bearer token has expired"));
    assert!(!format!("{error:?}").contains(&issued.access_token));
    assert!(!error.to_string().contains(&issued.access_token));
    Ok(())
}

#[tokio::test]
async fn a_get_is_retried_through_server_errors() -> Result<()> {
    let harness = Harness::start().await?;
    let client = harness.client()?;
    harness.fault("/api/1.0/users/me", 503, 2).await?;
    let me = client.get::<Value>(&alice(), "/users/me", &[]).await?;
    assert_eq!(me.data["name"], "Alice Example");
    assert_eq!(harness.faults_left().await?, 0);

    harness.fault("/api/1.0/users/me", 500, 10).await?;
    let error = client
        .get::<Value>(&alice(), "/users/me", &[])
        .await
        .err()
        .context("ten 500s were survived")?;
    let Error::Unavailable {
        status: Some(500),
        attempts: 4,
        ..
    } = &error
    else {
        anyhow::bail!("expected Unavailable after 4 attempts, got {error:?}");
    };
    Ok(())
}

#[tokio::test]
async fn writes_are_not_retried_unless_marked_idempotent() -> Result<()> {
    let harness = Harness::start().await?;
    let client = harness.client()?;
    let token = alice();
    let workspace = first_workspace(&client, &token).await?;

    harness.fault("/api/1.0/tasks", 503, 1).await?;
    let error = client
        .post::<Value>(
            &token,
            "/tasks",
            &[],
            json!({"name": "once", "workspace": workspace}),
        )
        .await
        .err()
        .context("the POST was retried past the fault")?;
    assert!(
        matches!(
            error,
            Error::Unavailable {
                status: Some(503),
                attempts: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        harness.faults_left().await?,
        0,
        "the single fault was consumed"
    );

    let task = client
        .post::<Value>(
            &token,
            "/tasks",
            &[],
            json!({"name": "once", "workspace": workspace}),
        )
        .await?;
    let gid = task.data["gid"].as_str().context("task without gid")?;
    let path = format!("/tasks/{gid}");

    harness.fault(&format!("/api/1.0{path}"), 503, 1).await?;
    let plain = client
        .put::<Value>(&token, &path, &[], json!({"completed": true}), false)
        .await;
    assert!(
        matches!(plain, Err(Error::Unavailable { attempts: 1, .. })),
        "{plain:?}"
    );

    harness.fault(&format!("/api/1.0{path}"), 503, 1).await?;
    let idempotent = client
        .put::<Value>(&token, &path, &[], json!({"completed": true}), true)
        .await?;
    assert_eq!(idempotent.data["completed"], true);
    Ok(())
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_fails_at_once() -> Result<()> {
    let harness = Harness::start().await?;
    let client = harness.client()?;
    harness.fault("/api/1.0/users/me", 429, 1).await?;
    // Retry-After is 30 s: a client that waited it out would not answer within 15.
    let error = tokio::time::timeout(
        Duration::from_secs(15),
        client.get::<Value>(&alice(), "/users/me", &[]),
    )
    .await
    .context("the 429 was waited out")?
    .err()
    .context("the 429 was retried")?;
    let Error::RateLimited {
        retry_after,
        errors,
    } = &error
    else {
        anyhow::bail!("expected RateLimited, got {error:?}");
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(30)));
    assert!(errors[0].message.contains("rate limit"));
    Ok(())
}

/// Serves `router` on a fresh port; returns the API base URL.
async fn serve(router: Router) -> Result<(String, DropGuard)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/1.0", listener.local_addr()?);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    Ok((base, stop.drop_guard()))
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out() -> Result<()> {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/api/1.0/users/me",
        get(move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("Retry-After", "1")],
                        axum::Json(json!({"errors": [{"message": "slow down"}]})),
                    )
                        .into_response()
                } else {
                    axum::Json(json!({"data": {"gid": "1"}})).into_response()
                }
            }
        }),
    );
    let (base, _stop) = serve(router).await?;
    let client = Client::new(fast_config(base))?;
    let started = Instant::now();
    let me = client.get::<Value>(&alice(), "/users/me", &[]).await?;
    assert_eq!(me.data["gid"], "1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    Ok(())
}

#[tokio::test]
async fn asana_change_is_captured_counted_and_enable_disable_sent() -> Result<()> {
    let router = Router::new().route(
        "/api/1.0/projects",
        get(|headers: HeaderMap| async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let body = json!({"data": {
                "enable": header("asana-enable"),
                "disable": header("asana-disable"),
            }});
            // Appended, not inserted: Asana sends one header per change.
            let mut reply = HeaderMap::new();
            reply.append(
                "asana-change",
                HeaderValue::from_static(
                    "name=teams_deprecation;info=https://asana.test/teams;affected=true",
                ),
            );
            reply.append(
                "asana-change",
                HeaderValue::from_static("name=new_enum_values;info=https://asana.test/enums"),
            );
            reply.insert("x-request-id", HeaderValue::from_static("req-42"));
            (reply, axum::Json(body))
        }),
    );
    let (base, _stop) = serve(router).await?;
    let mut config = fast_config(base);
    config.asana_enable = vec!["teams_deprecation".into(), "new_enum_values".into()];
    config.asana_disable = vec!["old_thing".into()];
    let client = Client::new(config)?;

    let response = client.get::<Value>(&alice(), "/projects", &[]).await?;
    assert_eq!(response.data["enable"], "teams_deprecation,new_enum_values");
    assert_eq!(response.data["disable"], "old_thing");
    assert_eq!(response.request_id.as_deref(), Some("req-42"));
    assert_eq!(
        response.asana_change,
        vec![
            AsanaChange {
                name: "teams_deprecation".into(),
                info: Some("https://asana.test/teams".into()),
                affected: Some(true),
            },
            AsanaChange {
                name: "new_enum_values".into(),
                info: Some("https://asana.test/enums".into()),
                affected: None,
            },
        ]
    );
    client.get::<Value>(&alice(), "/projects", &[]).await?;
    let counts = client.asana_change_counts();
    assert_eq!(counts.get("teams_deprecation"), Some(&2));
    assert_eq!(counts.get("new_enum_values"), Some(&2));
    Ok(())
}

#[tokio::test]
async fn redirects_are_not_followed_so_the_token_stays_with_asana() -> Result<()> {
    // Where a redirect would send the request: it records every Authorization it sees.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorder = seen.clone();
    let elsewhere = Router::new().fallback(move |headers: HeaderMap| {
        let recorder = recorder.clone();
        async move {
            let authorization = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            recorder.lock().expect("lock").push(authorization);
            axum::Json(json!({"data": {"gid": "stolen"}}))
        }
    });
    let (other, _stop_other) = serve(elsewhere).await?;
    let target = format!("{other}/users/me");
    let asana = Router::new().route(
        "/api/1.0/users/me",
        get(move || {
            let target = target.clone();
            async move { (StatusCode::FOUND, [("Location", target)]).into_response() }
        }),
    );
    let (base, _stop) = serve(asana).await?;
    let client = Client::new(fast_config(base.clone()))?;
    let error = client
        .get::<Value>(&alice(), "/users/me", &[])
        .await
        .expect_err("a redirect is not followed");
    assert!(
        matches!(error, Error::Api { status: 302, .. }),
        "a clear error: {error}"
    );
    let raw = client
        .send_raw(
            &alice(),
            asana_client::RawRequest {
                method: reqwest::Method::GET,
                path: "/users/me".into(),
                query: Vec::new(),
                headers: reqwest::header::HeaderMap::new(),
                body: bytes::Bytes::new(),
            },
            1024,
        )
        .await?;
    assert_eq!(raw.status, 302, "the proxy returns the redirect as it is");
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing reached the other host"
    );
    Ok(())
}

#[tokio::test]
async fn a_response_body_past_the_limit_is_refused_unread() -> Result<()> {
    let huge = "x".repeat(64 * 1024);
    let router = Router::new().route(
        "/api/1.0/users/me",
        get(move || {
            let huge = huge.clone();
            async move { axum::Json(json!({"data": {"gid": "1", "padding": huge}})) }
        }),
    );
    let (base, _stop) = serve(router).await?;
    let client = Client::new(Config {
        max_response_bytes: 16 * 1024,
        ..fast_config(base)
    })?;
    let error = client
        .get::<Value>(&alice(), "/users/me", &[])
        .await
        .expect_err("64 KiB is over the 16 KiB limit");
    assert!(
        matches!(&error, Error::InvalidResponse { reason, .. } if reason.contains("exceeds 16384 bytes")),
        "{error}"
    );
    Ok(())
}
