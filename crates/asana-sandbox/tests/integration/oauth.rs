//! The OAuth endpoints end to end over HTTP: consent page, code flow with PKCE for the REST
//! and MCP apps, refresh, rotation, expiry, revocation, introspection and discovery.

use std::collections::HashMap;

use anyhow::{Context, Result, ensure};
use asana_sandbox::control::HEADER;
use asana_sandbox::error::EXPIRED;
use asana_sandbox::seed::{
    MCP_CLIENT_ID, MCP_CLIENT_SECRET, REDIRECT_URI, REST_CLIENT_ID, REST_CLIENT_SECRET,
};
use asana_sandbox::{Config, Sandbox};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

const KEY: &str = "oauth-test-control-key";
/// RFC 7636 appendix B: a verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const STATE: &str = "xyzzy-state-42";

/// A sandbox serving on an ephemeral port, stopped on drop.
struct Harness {
    base: String,
    http: reqwest::Client,
    _stop: DropGuard,
}

async fn start(auto_approve: bool) -> Result<Harness> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let sandbox = Sandbox::new(Config {
        public_url: base.clone(),
        control_key: Some(KEY.into()),
        auto_approve,
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

/// The query of a redirect's `Location`, after checking it goes to `REDIRECT_URI`.
fn redirected(response: &reqwest::Response) -> Result<HashMap<String, String>> {
    ensure!(
        response.status() == StatusCode::FOUND,
        "expected a redirect, got {}",
        response.status()
    );
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .context("no Location")?
        .to_str()?;
    ensure!(
        location.starts_with(&format!("{REDIRECT_URI}?")),
        "redirected elsewhere: {location}"
    );
    let url = reqwest::Url::parse(location)?;
    Ok(url.query_pairs().into_owned().collect())
}

/// The hidden inputs of the consent form, as a browser would submit them.
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|input| {
            let name = input.split("name=\"").nth(1)?.split('"').next()?;
            let value = input.split("value=\"").nth(1)?.split('"').next()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn mcp_resource(&self) -> String {
        self.url("/v2/mcp")
    }

    /// `GET /-/oauth_authorize` with the usual parameters for `client_id`, overridden or
    /// extended by `extra` (an empty value drops a parameter).
    async fn authorize(
        &self,
        client_id: &str,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::Response> {
        let mut params: Vec<(&str, &str)> = vec![
            ("client_id", client_id),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("state", STATE),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        for (name, value) in extra {
            params.retain(|(n, _)| n != name);
            if !value.is_empty() {
                params.push((name, value));
            }
        }
        Ok(self
            .http
            .get(self.url("/-/oauth_authorize"))
            .query(&params)
            .send()
            .await?)
    }

    /// Shows the consent page and presses `decision` ("allow" or "deny") the way a browser
    /// submits the form; returns the page and the redirect's query.
    async fn consent(
        &self,
        client_id: &str,
        extra: &[(&str, &str)],
        decision: &str,
    ) -> Result<(String, HashMap<String, String>)> {
        let page = self.authorize(client_id, extra).await?;
        ensure!(page.status() == StatusCode::OK, "page: {}", page.status());
        let html = page.text().await?;
        let mut form = hidden_fields(&html);
        ensure!(!form.is_empty(), "the page has no form fields");
        form.push(("decision".into(), decision.into()));
        let response = self
            .http
            .post(self.url("/-/oauth_authorize"))
            .form(&form)
            .send()
            .await?;
        Ok((html, redirected(&response)?))
    }

    /// A code for `client_id`, consented through the page.
    async fn code(&self, client_id: &str, extra: &[(&str, &str)]) -> Result<String> {
        let (_, query) = self.consent(client_id, extra, "allow").await?;
        ensure!(query.get("state").map(String::as_str) == Some(STATE));
        query.get("code").cloned().context("no code")
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

    async fn exchange(
        &self,
        client_id: &str,
        secret: &str,
        code: &str,
    ) -> Result<(StatusCode, Value)> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("redirect_uri", REDIRECT_URI),
            ("code", code),
            ("code_verifier", VERIFIER),
        ])
        .await
    }

    /// Access and refresh token of a fresh REST grant for Alice.
    async fn rest_tokens(&self) -> Result<(String, String)> {
        let code = self.code(REST_CLIENT_ID, &[]).await?;
        let (status, body) = self
            .exchange(REST_CLIENT_ID, REST_CLIENT_SECRET, &code)
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

    async fn refresh(&self, refresh_token: &str) -> Result<(StatusCode, Value)> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", REST_CLIENT_ID),
            ("client_secret", REST_CLIENT_SECRET),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn me(&self, token: &str) -> Result<(StatusCode, Value)> {
        let response = self
            .http
            .get(self.url("/api/1.0/users/me"))
            .bearer_auth(token)
            .send()
            .await?;
        Ok((response.status(), response.json().await?))
    }

    async fn token_info(&self, token: &str) -> Result<Value> {
        Ok(self
            .http
            .post(self.url("/-/token_info"))
            .form(&[("token", token)])
            .send()
            .await?
            .json()
            .await?)
    }

    async fn revoke(&self, secret: &str, token: &str) -> Result<StatusCode> {
        Ok(self
            .http
            .post(self.url("/-/oauth_revoke"))
            .form(&[
                ("client_id", REST_CLIENT_ID),
                ("client_secret", secret),
                ("token", token),
            ])
            .send()
            .await?
            .status())
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<StatusCode> {
        Ok(self
            .http
            .request(method, self.url(path))
            .header(HEADER, KEY)
            .json(&body)
            .send()
            .await?
            .status())
    }
}

#[tokio::test]
async fn rest_app_code_flow_with_pkce() -> Result<()> {
    let h = start(false).await?;
    let page = h.authorize(REST_CLIENT_ID, &[]).await?;
    assert_eq!(page.status(), StatusCode::OK);
    let content_type = page.headers()[reqwest::header::CONTENT_TYPE].to_str()?;
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = page.text().await?;
    for expected in [
        "<!doctype html>",
        "Sandbox REST app wants to access your Asana account",
        "Alice Example",
        "alice@acme.test",
        "<form method=\"post\" action=\"/-/oauth_authorize\">",
        "id=\"allow\"",
        "id=\"deny\"",
        "Full permissions",
    ] {
        assert!(html.contains(expected), "page lacks {expected}:\n{html}");
    }

    let code = h.code(REST_CLIENT_ID, &[]).await?;
    let (status, body) = h
        .exchange(REST_CLIENT_ID, REST_CLIENT_SECRET, &code)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["refresh_token"].is_string());
    assert_eq!(body["data"]["name"], "Alice Example");
    assert_eq!(body["data"]["email"], "alice@acme.test");
    let gid = body["data"]["gid"].as_str().context("gid")?;
    assert_eq!(
        body["data"]["id"]
            .as_u64()
            .map(|id| id.to_string())
            .as_deref(),
        Some(gid)
    );

    let access = body["access_token"].as_str().context("access")?;
    let (status, me) = h.me(access).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["data"]["gid"], gid);

    let (status, reused) = h
        .exchange(REST_CLIENT_ID, REST_CLIENT_SECRET, &code)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reused,
        json!({"error": "invalid_grant"}),
        "a code works once"
    );

    let info = h.token_info(access).await?;
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "bearer");
    assert_eq!(info["client_id"], REST_CLIENT_ID);
    assert_eq!(info["scope"], "default");
    let refresh = body["refresh_token"].as_str().context("refresh")?;
    let info = h.token_info(refresh).await?;
    assert_eq!(
        (info["token_type"].as_str(), info["active"].as_bool()),
        (Some("refresh"), Some(true))
    );
    assert_eq!(h.token_info("no-such-token").await?["active"], false);
    Ok(())
}

#[tokio::test]
async fn mcp_app_needs_resource_and_its_token_is_refused_by_rest() -> Result<()> {
    let h = start(false).await?;
    let query = redirected(&h.authorize(MCP_CLIENT_ID, &[]).await?)?;
    assert_eq!(
        query.get("error").map(String::as_str),
        Some("invalid_target")
    );
    assert_eq!(query.get("state").map(String::as_str), Some(STATE));
    let resource = h.mcp_resource();
    let query = redirected(
        &h.authorize(
            MCP_CLIENT_ID,
            &[("resource", &resource), ("scope", "tasks:read")],
        )
        .await?,
    )?;
    assert_eq!(
        query.get("error").map(String::as_str),
        Some("invalid_scope")
    );

    let extra = [("resource", resource.as_str()), ("scope", "default")];
    let (html, query) = h.consent(MCP_CLIENT_ID, &extra, "allow").await?;
    assert!(html.contains("Sandbox MCP app wants to access your Asana account"));
    let code = query.get("code").context("code")?;
    let (status, body) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", MCP_CLIENT_ID),
            ("client_secret", MCP_CLIENT_SECRET),
            ("redirect_uri", REDIRECT_URI),
            ("code", code),
            ("code_verifier", VERIFIER),
            ("resource", &resource),
        ])
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refresh_token"].is_string());
    let access = body["access_token"].as_str().context("access")?;
    let (status, refused) = h.me(access).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "MCP tokens are not for REST"
    );
    assert_eq!(refused["errors"][0]["message"], "Not Authorized");
    let info = h.token_info(access).await?;
    assert_eq!(
        (info["active"].as_bool(), info["client_id"].as_str()),
        (Some(true), Some(MCP_CLIENT_ID))
    );

    // `/v2` (what Asana's examples send) is accepted too; a resource that differs at the
    // exchange is not.
    let code = h
        .code(MCP_CLIENT_ID, &[("resource", &h.url("/v2"))])
        .await?;
    let (status, body) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", MCP_CLIENT_ID),
            ("client_secret", MCP_CLIENT_SECRET),
            ("redirect_uri", REDIRECT_URI),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("resource", &resource),
        ])
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    Ok(())
}

#[tokio::test]
async fn discovery_documents_point_at_the_sandbox() -> Result<()> {
    let h = start(false).await?;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/v2",
        "/.well-known/oauth-protected-resource/v2/mcp",
    ] {
        let prm: Value = h.http.get(h.url(path)).send().await?.json().await?;
        assert_eq!(prm["resource"], h.mcp_resource(), "{path}");
        assert_eq!(prm["authorization_servers"], json!([h.base]));
        assert_eq!(prm["scopes_supported"], json!(["default"]));
    }
    let server: Value = h
        .http
        .get(h.url("/.well-known/oauth-authorization-server"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(server["issuer"], h.base);
    assert_eq!(
        server["authorization_endpoint"],
        h.url("/-/oauth_authorize")
    );
    assert_eq!(server["token_endpoint"], h.url("/-/oauth_token"));
    assert_eq!(server["revocation_endpoint"], h.url("/-/oauth_revoke"));
    assert_eq!(server["code_challenge_methods_supported"], json!(["S256"]));
    Ok(())
}

#[tokio::test]
async fn deny_sends_access_denied_back() -> Result<()> {
    let h = start(false).await?;
    let (_, query) = h.consent(REST_CLIENT_ID, &[], "deny").await?;
    assert_eq!(
        query.get("error").map(String::as_str),
        Some("access_denied")
    );
    assert_eq!(query.get("state").map(String::as_str), Some(STATE));
    assert!(!query.contains_key("code"));
    Ok(())
}

#[tokio::test]
async fn untrusted_clients_get_a_page_and_bad_requests_a_redirect() -> Result<()> {
    let h = start(false).await?;
    let wrong_redirect = format!("{REDIRECT_URI}/other");
    for extra in [
        [("redirect_uri", wrong_redirect.as_str())],
        [("client_id", "no-such-app")],
    ] {
        let response = h.authorize(REST_CLIENT_ID, &extra).await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{extra:?}");
        assert!(response.headers().get(reqwest::header::LOCATION).is_none());
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].to_str()?;
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert!(response.text().await?.starts_with("Error: "));
    }
    for (extra, error) in [
        (("state", ""), "invalid_request"),
        (("code_challenge", ""), "invalid_request"),
        (("code_challenge_method", "plain"), "invalid_request"),
        (("response_type", "token"), "unsupported_response_type"),
        (("scope", "default tasks:read"), "invalid_scope"),
    ] {
        let query = redirected(&h.authorize(REST_CLIENT_ID, &[extra]).await?)?;
        assert_eq!(
            query.get("error").map(String::as_str),
            Some(error),
            "{extra:?}"
        );
        assert!(!query.contains_key("code"));
    }
    Ok(())
}

#[tokio::test]
async fn exchange_checks_client_redirect_and_verifier() -> Result<()> {
    let h = start(false).await?;
    let code = h.code(REST_CLIENT_ID, &[]).await?;
    let (status, body) = h.exchange(REST_CLIENT_ID, "wrong-secret", &code).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, body) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", REST_CLIENT_ID),
            ("client_secret", REST_CLIENT_SECRET),
            ("redirect_uri", REDIRECT_URI),
            ("code", &code),
            ("code_verifier", &VERIFIER.replace('d', "e")),
        ])
        .await?;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}))
    );
    let (status, _) = h
        .exchange(REST_CLIENT_ID, REST_CLIENT_SECRET, &code)
        .await?;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a failed attempt uses the code up"
    );

    let code = h.code(REST_CLIENT_ID, &[]).await?;
    let (status, body) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", REST_CLIENT_ID),
            ("client_secret", REST_CLIENT_SECRET),
            ("redirect_uri", "http://127.0.0.1:50060/elsewhere"),
            ("code", &code),
            ("code_verifier", VERIFIER),
        ])
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // client_secret_basic works as well as client_secret_post.
    let code = h.code(REST_CLIENT_ID, &[]).await?;
    let response = h
        .http
        .post(h.url("/-/oauth_token"))
        .basic_auth(REST_CLIENT_ID, Some(REST_CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT_URI),
            ("code", &code),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);

    let (status, body) = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", REST_CLIENT_ID),
            ("client_secret", REST_CLIENT_SECRET),
        ])
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    Ok(())
}

#[tokio::test]
async fn refresh_then_expiry_via_control_then_refresh_again() -> Result<()> {
    let h = start(false).await?;
    let (access, refresh) = h.rest_tokens().await?;
    let (status, body) = h.refresh(&refresh).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.get("refresh_token").is_none(),
        "no rotation by default"
    );
    let renewed = body["access_token"].as_str().context("access")?;
    assert_ne!(renewed, access);
    assert_eq!(h.me(renewed).await?.0, StatusCode::OK);

    let expired = h
        .control(
            reqwest::Method::POST,
            "/_sandbox/grants/expire",
            json!({"refresh_token": refresh}),
        )
        .await?;
    assert_eq!(expired, StatusCode::OK);
    let (status, body) = h.me(renewed).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["message"], EXPIRED);
    assert_eq!(h.token_info(renewed).await?["active"], false);

    let (status, body) = h.refresh(&refresh).await?;
    assert_eq!(status, StatusCode::OK);
    let fresh = body["access_token"].as_str().context("access")?;
    assert_eq!(h.me(fresh).await?.0, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn revoke_ends_the_grant() -> Result<()> {
    let h = start(false).await?;
    let (access, refresh) = h.rest_tokens().await?;
    assert_eq!(
        h.revoke(REST_CLIENT_SECRET, &access).await?,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(h.revoke("wrong", &refresh).await?, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.revoke(REST_CLIENT_SECRET, &refresh).await?,
        StatusCode::OK
    );
    assert_eq!(
        h.revoke(REST_CLIENT_SECRET, "never-issued").await?,
        StatusCode::OK
    );

    let (status, body) = h.refresh(&refresh).await?;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}))
    );
    let (status, body) = h.me(&access).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["message"], "Not Authorized");
    assert_eq!(h.token_info(&access).await?["active"], false);
    assert_eq!(h.token_info(&refresh).await?["active"], false);
    Ok(())
}

#[tokio::test]
async fn rotation_retires_the_old_refresh_token() -> Result<()> {
    let h = start(false).await?;
    let (_, refresh) = h.rest_tokens().await?;
    let status = h
        .control(
            reqwest::Method::PUT,
            "/_sandbox/rotation",
            json!({"enabled": true}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h.refresh(&refresh).await?;
    assert_eq!(status, StatusCode::OK);
    let rotated = body["refresh_token"]
        .as_str()
        .context("a rotated refresh token")?;
    assert_ne!(rotated, refresh);
    let (status, body) = h.refresh(&refresh).await?;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}))
    );
    assert_eq!(h.refresh(rotated).await?.0, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn sandbox_user_picks_who_consents() -> Result<()> {
    let h = start(false).await?;
    let extra = [("sandbox_user", "bob@side.test")];
    let (html, query) = h.consent(REST_CLIENT_ID, &extra, "allow").await?;
    assert!(html.contains("Bob Example"));
    let code = query.get("code").context("code")?;
    let (_, body) = h.exchange(REST_CLIENT_ID, REST_CLIENT_SECRET, code).await?;
    assert_eq!(body["data"]["email"], "bob@side.test");

    let unknown = h
        .authorize(REST_CLIENT_ID, &[("sandbox_user", "nobody@nowhere.test")])
        .await?;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(unknown.headers().get(reqwest::header::LOCATION).is_none());
    Ok(())
}

#[tokio::test]
async fn auto_approve_skips_the_page() -> Result<()> {
    let h = start(true).await?;
    let query = redirected(&h.authorize(REST_CLIENT_ID, &[]).await?)?;
    let code = query.get("code").context("a code without a page")?;
    assert_eq!(query.get("state").map(String::as_str), Some(STATE));
    let (status, _) = h.exchange(REST_CLIENT_ID, REST_CLIENT_SECRET, code).await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}
