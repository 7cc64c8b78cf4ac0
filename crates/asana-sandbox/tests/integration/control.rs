//! The control API over HTTP: access control, stats, seeding, PATs, apps, grants, limits and
//! faults.

use std::collections::HashMap;

use anyhow::{Context, Result, ensure};
use asana_sandbox::control::HEADER;
use asana_sandbox::seed::{ALICE_PAT, REDIRECT_URI, REST_CLIENT_ID, REST_CLIENT_SECRET};
use asana_sandbox::tokens::token_key;
use asana_sandbox::{Config, Sandbox};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

const KEY: &str = "control-test-key";
/// RFC 7636 appendix B: a verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A sandbox (auto-approving consent) on an ephemeral port, stopped on drop.
struct Harness {
    base: String,
    http: reqwest::Client,
    _stop: DropGuard,
}

async fn start(control_key: Option<&str>) -> Result<Harness> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let sandbox = Sandbox::new(Config {
        public_url: base.clone(),
        control_key: control_key.map(str::to_owned),
        auto_approve: true,
        ..Config::default()
    });
    let stop = CancellationToken::new();
    tokio::spawn(sandbox.serve(listener, stop.clone()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(Harness {
        base,
        http,
        _stop: stop.drop_guard(),
    })
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A control request with the right key and a JSON body (none when `body` is null).
    async fn control(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header(HEADER, KEY);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await?;
        Ok((response.status(), response.json().await?))
    }

    async fn get(&self, path: &str, token: &str) -> Result<reqwest::Response> {
        Ok(self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await?)
    }

    /// Access and refresh token of a new grant of `client_id` (consent is auto-approved).
    async fn grant(
        &self,
        client_id: &str,
        secret: &str,
        redirect_uri: &str,
    ) -> Result<(String, String)> {
        let authorized = self
            .http
            .get(self.url("/-/oauth_authorize"))
            .query(&[
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("response_type", "code"),
                ("state", "s"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await?;
        ensure!(
            authorized.status() == StatusCode::FOUND,
            "authorize: {}",
            authorized.status()
        );
        let location = authorized.headers()[reqwest::header::LOCATION].to_str()?;
        let query: HashMap<String, String> = reqwest::Url::parse(location)?
            .query_pairs()
            .into_owned()
            .collect();
        let code = query.get("code").context("no code")?;
        let (status, body) = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("redirect_uri", redirect_uri),
                ("code", code),
                ("code_verifier", VERIFIER),
            ])
            .await?;
        ensure!(status == StatusCode::OK, "exchange: {status} {body}");
        Ok((
            body["access_token"].as_str().context("access")?.to_owned(),
            body["refresh_token"]
                .as_str()
                .context("refresh")?
                .to_owned(),
        ))
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(self.url("/-/oauth_token"))
            .form(form)
            .send()
            .await?;
        Ok((response.status(), response.json().await?))
    }

    async fn refresh(&self, refresh_token: &str) -> Result<(StatusCode, Value)> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", REST_CLIENT_ID),
            ("client_secret", REST_CLIENT_SECRET),
            ("refresh_token", refresh_token),
        ])
        .await
    }
}

#[tokio::test]
async fn control_api_is_absent_without_a_key_and_locked_without_the_right_one() -> Result<()> {
    let off = start(None).await?;
    let response = off
        .http
        .get(off.url("/_sandbox/stats"))
        .header(HEADER, KEY)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let on = start(Some(KEY)).await?;
    let missing = on.http.get(on.url("/_sandbox/stats")).send().await?;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let wrong = on
        .http
        .put(on.url("/_sandbox/rotation"))
        .header(HEADER, "not-the-key")
        .body("not json")
        .send()
        .await?;
    assert_eq!(
        wrong.status(),
        StatusCode::UNAUTHORIZED,
        "the key is checked before the body"
    );
    let (status, _) = on
        .control(Method::GET, "/_sandbox/stats", Value::Null)
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = on
        .control(Method::PUT, "/_sandbox/rotation", json!({"on": true}))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    Ok(())
}

#[tokio::test]
async fn stats_count_refreshes_and_rate_limits_without_leaking_tokens() -> Result<()> {
    let h = start(Some(KEY)).await?;
    let (access, refresh) = h
        .grant(REST_CLIENT_ID, REST_CLIENT_SECRET, REDIRECT_URI)
        .await?;
    for _ in 0..2 {
        assert_eq!(h.refresh(&refresh).await?.0, StatusCode::OK);
    }
    assert_eq!(
        h.refresh("dead-refresh-token").await?.0,
        StatusCode::BAD_REQUEST
    );

    let (status, _) = h
        .control(
            Method::PUT,
            "/_sandbox/limits",
            json!({"free_per_minute": 1, "paid_per_minute": 1}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.get("/api/1.0/users/me", ALICE_PAT).await?.status(),
        StatusCode::OK
    );
    let limited = h.get("/api/1.0/users/me", ALICE_PAT).await?;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key(reqwest::header::RETRY_AFTER));

    let response = h
        .http
        .get(h.url("/_sandbox/stats"))
        .header(HEADER, KEY)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await?;
    for secret in [
        access.as_str(),
        refresh.as_str(),
        ALICE_PAT,
        REST_CLIENT_SECRET,
    ] {
        assert!(!text.contains(secret), "stats leak a secret");
    }
    let stats: Value = serde_json::from_str(&text)?;
    assert_eq!(stats["refreshes_by_client"][REST_CLIENT_ID], 2);
    assert_eq!(stats["refreshes_total"], 2);
    assert_eq!(stats["tokens"][token_key(REST_CLIENT_ID)]["refreshes"], 2);
    let pat = &stats["tokens"][token_key(ALICE_PAT)];
    assert_eq!(
        (pat["requests_total"].as_u64(), pat["rate_limited"].as_u64()),
        (Some(2), Some(1))
    );
    let grant = &stats["grants"][token_key(&refresh)];
    assert_eq!(
        (grant["client_id"].as_str(), grant["revoked"].as_bool()),
        (Some(REST_CLIENT_ID), Some(false))
    );
    Ok(())
}

#[tokio::test]
async fn faults_fail_requests_for_a_path_until_used_up_or_cleared() -> Result<()> {
    let h = start(Some(KEY)).await?;
    let (status, _) = h
        .control(
            Method::POST,
            "/_sandbox/faults",
            json!({"path_prefix": "/api/1.0/users/me", "status": 503, "times": 1}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let failed = h.get("/api/1.0/users/me", ALICE_PAT).await?;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = failed.json().await?;
    assert!(body["errors"][0]["message"].is_string());
    assert_eq!(
        h.get("/api/1.0/users/me", ALICE_PAT).await?.status(),
        StatusCode::OK
    );

    // A lasting fault on the token endpoint, until the faults are cleared.
    let (_, refresh) = h
        .grant(REST_CLIENT_ID, REST_CLIENT_SECRET, REDIRECT_URI)
        .await?;
    let (status, _) = h
        .control(
            Method::POST,
            "/_sandbox/faults",
            json!({"path_prefix": "/-/oauth_token", "status": 503}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    for _ in 0..2 {
        assert_eq!(
            h.refresh(&refresh).await?.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let (status, body) = h
        .control(Method::DELETE, "/_sandbox/faults", Value::Null)
        .await?;
    assert_eq!(
        (status, &body["data"]["removed"]),
        (StatusCode::OK, &json!(1))
    );
    assert_eq!(h.refresh(&refresh).await?.0, StatusCode::OK);

    let (status, _) = h
        .control(
            Method::POST,
            "/_sandbox/faults",
            json!({"path_prefix": "/api", "status": 404}),
        )
        .await?;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only 429 and 5xx are faults"
    );
    Ok(())
}

#[tokio::test]
async fn seeded_objects_get_new_gids_and_linked_references() -> Result<()> {
    let h = start(Some(KEY)).await?;
    let (status, body) = h
        .control(
            Method::POST,
            "/_sandbox/seed",
            json!({"objects": [
                {"gid": "ws", "resource_type": "workspace", "name": "Seeded Co",
                 "is_organization": true, "email_domains": [], "_sandbox_paid": true},
                {"resource_type": "user", "name": "Dana Seed", "email": "dana@seeded.test",
                 "photo": null,
                 "workspaces": [{"gid": "ws", "resource_type": "workspace", "name": "Seeded Co"}]},
            ]}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let workspace = body["data"][0]["gid"].as_str().context("workspace gid")?;
    let user = body["data"][1]["gid"].as_str().context("user gid")?;
    assert_ne!(workspace, "ws");
    assert!(workspace.parse::<u64>().is_ok(), "gids are numeric strings");
    assert_eq!(body["data"][1]["workspaces"][0]["gid"], workspace);

    let (status, body) = h
        .control(Method::POST, "/_sandbox/pats", json!({"user": user}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let pat = body["data"]["token"].as_str().context("token")?;
    let me: Value = h.get("/api/1.0/users/me", pat).await?.json().await?;
    assert_eq!(me["data"]["email"], "dana@seeded.test");
    let workspaces: Value = h.get("/api/1.0/workspaces", pat).await?.json().await?;
    assert_eq!(workspaces["data"][0]["gid"], workspace);

    let (status, _) = h
        .control(
            Method::POST,
            "/_sandbox/seed",
            json!({"objects": [{"name": "untyped"}]}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .control(Method::POST, "/_sandbox/pats", json!({"user": "999"}))
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn registered_apps_can_authorize() -> Result<()> {
    let h = start(Some(KEY)).await?;
    let app = json!({
        "client_id": "extra-app", "client_secret": "extra-secret", "name": "Extra",
        "kind": "rest", "redirect_uris": ["http://localhost:9999/cb"],
    });
    let (status, body) = h
        .control(Method::POST, "/_sandbox/apps", app.clone())
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        body["data"].get("client_secret").is_none(),
        "the secret is not echoed"
    );
    let (access, _) = h
        .grant("extra-app", "extra-secret", "http://localhost:9999/cb")
        .await?;
    assert_eq!(
        h.get("/api/1.0/users/me", &access).await?.status(),
        StatusCode::OK
    );
    assert_eq!(
        h.control(Method::POST, "/_sandbox/apps", app).await?.0,
        StatusCode::OK
    );
    let (status, _) = h
        .control(
            Method::POST,
            "/_sandbox/apps",
            json!({"client_id": "x", "client_secret": "y", "name": "X", "kind": "soap", "redirect_uris": ["http://h/cb"]}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn grants_can_be_revoked_by_user_and_app() -> Result<()> {
    let h = start(Some(KEY)).await?;
    let (access, refresh) = h
        .grant(REST_CLIENT_ID, REST_CLIENT_SECRET, REDIRECT_URI)
        .await?;
    let me: Value = h.get("/api/1.0/users/me", &access).await?.json().await?;
    let alice = me["data"]["gid"].as_str().context("gid")?;
    let selector = json!({"user": alice, "client_id": REST_CLIENT_ID});
    let (status, body) = h
        .control(Method::POST, "/_sandbox/grants/revoke", selector.clone())
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        h.get("/api/1.0/users/me", &access).await?.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.refresh(&refresh).await?.1,
        json!({"error": "invalid_grant"})
    );
    let (status, _) = h
        .control(Method::POST, "/_sandbox/grants/revoke", selector)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "no live grant is left");
    let (status, _) = h
        .control(
            Method::POST,
            "/_sandbox/grants/expire",
            json!({"refresh_token": "x", "user": alice}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    Ok(())
}
