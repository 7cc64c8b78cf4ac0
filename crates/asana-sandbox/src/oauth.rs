//! OAuth 2.0 the way Asana serves it under `/-/`: the consent page at `/-/oauth_authorize`,
//! the code and refresh grants at `/-/oauth_token`, `/-/oauth_revoke` and `/-/token_info`,
//! plus the discovery documents MCP clients read (RFC 9728 protected-resource metadata for
//! `/v2/mcp`, RFC 8414 authorization-server metadata).
//!
//! REST apps and MCP apps share these endpoints; an MCP app must also send an RFC 8707
//! `resource` naming the sandbox's MCP server, and may only ask for the `default` scope.
//!
//! Who consents: the sandbox has no login, so the "browser user" is the first seeded user
//! (Alice) unless the authorize URL carries `sandbox_user=<user gid or email>`, a sandbox-only
//! parameter. With `Config::auto_approve` the consent page is skipped.
//!
//! Faults injected through the control API apply to the `/-/` endpoints too, so a client's
//! handling of a failing token endpoint can be tested.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::debug;

use crate::control::constant_time_eq;
use crate::tokens::{App, AppKind, Issued, PendingCode, Revocation, token_key};
use crate::{Sandbox, base64};

/// How long an authorization code can wait for its exchange.
const CODE_LIFETIME: TimeDelta = TimeDelta::minutes(10);

/// The query parameter that picks the consenting user (a user gid or email address).
pub const SANDBOX_USER: &str = "sandbox_user";

/// Form and query parameters, as given.
type Params = HashMap<String, String>;

/// The OAuth routes and the discovery documents.
pub fn routes(sandbox: Sandbox) -> Router {
    let endpoints = Router::new()
        .route("/-/oauth_authorize", get(authorize).post(decide))
        .route("/-/oauth_token", post(token))
        .route("/-/oauth_revoke", post(revoke))
        .route("/-/token_info", post(token_info))
        .layer(axum::middleware::from_fn_with_state(
            sandbox.clone(),
            inject_faults,
        ));
    Router::new()
        .merge(endpoints)
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/v2",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/v2/mcp",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server),
        )
        .with_state(sandbox)
}

/// The sandbox's public URL without a trailing slash: the issuer and the base of every
/// advertised endpoint.
fn issuer(sandbox: &Sandbox) -> &str {
    sandbox.config().public_url.trim_end_matches('/')
}

/// The `resource` values an MCP app may ask for: the MCP endpoint (what the metadata says)
/// and `/v2` (what Asana's own examples send).
fn mcp_resources(sandbox: &Sandbox) -> [String; 2] {
    let base = issuer(sandbox);
    [format!("{base}/v2/mcp"), format!("{base}/v2")]
}

/// Answers with an injected fault for the request's path, if one is set.
async fn inject_faults(State(sandbox): State<Sandbox>, request: Request, next: Next) -> Response {
    if let Some(response) = sandbox.apply_fault(request.uri().path()).await {
        return response;
    }
    next.run(request).await
}

// ---------------------------------------------------------------------------------------------
// Authorization: the consent page and its decision.

/// An authorization request that passed every check.
#[derive(Debug)]
struct Authorization {
    app: App,
    redirect_uri: String,
    state: String,
    code_challenge: String,
    scopes: Vec<String>,
    resource: Option<String>,
    /// The consenting user, as stored.
    user: Value,
}

/// Why an authorization request cannot go on.
#[derive(Debug)]
enum Refusal {
    /// The client or its redirect URI cannot be trusted, so nothing is redirected: a
    /// plain-text error page, as Asana shows.
    Page(&'static str),
    /// Reported back to the client at its (verified) redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: &'static str,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Page(message) => error_page(message),
            Self::Redirect {
                redirect_uri,
                state,
                error,
                description,
            } => {
                let mut pairs = vec![("error", error), ("error_description", description)];
                if let Some(state) = &state {
                    pairs.push(("state", state));
                }
                redirect(&redirect_uri, &pairs)
            }
        }
    }
}

/// A plain-text 400 page.
fn error_page(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Error: {message}\n"),
    )
        .into_response()
}

/// A 302 to `redirect_uri` with `pairs` added to its query.
fn redirect(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = reqwest::Url::parse(redirect_uri) else {
        return error_page("invalid_redirect_uri: The registered `redirect_uri` is not a URL.");
    };
    url.query_pairs_mut().extend_pairs(pairs);
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, url.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// A non-empty parameter.
fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Checks an authorization request the way Asana does: client and redirect URI first (a
/// page), then everything else (a redirect with `error`).
fn validate(sandbox: &Sandbox, params: &Params) -> Result<Authorization, Refusal> {
    let client_id = param(params, "client_id").ok_or(Refusal::Page(
        "invalid_request: The `client_id` parameter is missing.",
    ))?;
    let app = sandbox
        .tokens()
        .apps
        .get(client_id)
        .cloned()
        .ok_or(Refusal::Page(
            "invalid_client: The `client_id` parameter does not match a known application.",
        ))?;
    let redirect_uri = param(params, "redirect_uri")
        .filter(|uri| app.redirect_uris.iter().any(|r| r == uri))
        .ok_or(Refusal::Page(
            "invalid_redirect_uri: The `redirect_uri` parameter does not match a valid url for the application.",
        ))?
        .to_owned();
    let user = current_user(sandbox, param(params, SANDBOX_USER)).ok_or(Refusal::Page(
        "invalid_request: No such sandbox user (`sandbox_user` takes a user gid or email address; without it the first seeded user consents).",
    ))?;
    let refuse = |error, description| Refusal::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: param(params, "state").map(str::to_owned),
        error,
        description,
    };
    if param(params, "response_type") != Some("code") {
        return Err(refuse(
            "unsupported_response_type",
            "The sandbox supports response_type=code only.",
        ));
    }
    let state = param(params, "state")
        .ok_or_else(|| refuse("invalid_request", "The `state` parameter is required."))?
        .to_owned();
    let code_challenge = param(params, "code_challenge")
        .filter(|c| is_pkce_value(c))
        .filter(|_| param(params, "code_challenge_method") == Some("S256"))
        .ok_or_else(|| {
            refuse(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256.",
            )
        })?
        .to_owned();
    let scopes = parse_scopes(app.kind, param(params, "scope")).ok_or_else(|| {
        refuse(
            "invalid_scope",
            match app.kind {
                AppKind::Mcp => "Invalid scope(s) requested: MCP apps take only `default`.",
                AppKind::Rest => {
                    "Invalid scope(s) requested: use `default` (full permissions) or granular `<resource>:<read|write|delete>` scopes, not both."
                }
            },
        )
    })?;
    let resource = match app.kind {
        AppKind::Rest => None,
        AppKind::Mcp => {
            let resource = param(params, "resource")
                .filter(|r| mcp_resources(sandbox).iter().any(|known| known == r))
                .ok_or_else(|| {
                    refuse(
                        "invalid_target",
                        "MCP apps must send `resource` naming this sandbox's MCP server (see /.well-known/oauth-protected-resource).",
                    )
                })?;
            Some(resource.to_owned())
        }
    };
    Ok(Authorization {
        app,
        redirect_uri,
        state,
        code_challenge,
        scopes,
        resource,
        user,
    })
}

/// The sandbox's "browser user": `hint` (a gid or an email address), else the first user.
fn current_user(sandbox: &Sandbox, hint: Option<&str>) -> Option<Value> {
    let world = sandbox.world();
    match hint {
        None => world.all("user", |_| true).next().cloned(),
        Some(email) if email.contains('@') => {
            world.all("user", |u| u["email"] == email).next().cloned()
        }
        Some(gid) => world.get_typed(gid, "user").cloned(),
    }
}

/// The scopes granted for `requested` (space-delimited; `default` when absent), or `None`
/// when Asana would refuse them.
fn parse_scopes(kind: AppKind, requested: Option<&str>) -> Option<Vec<String>> {
    let mut scopes: Vec<String> = requested
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        scopes.push("default".to_owned());
    }
    let full = scopes.iter().any(|s| s == "default");
    let granular = scopes.iter().any(|s| s.contains(':'));
    let valid = match kind {
        AppKind::Mcp => scopes == ["default"],
        AppKind::Rest => scopes.iter().all(|s| is_known_scope(s)) && !(full && granular),
    };
    valid.then_some(scopes)
}

/// An identity scope or a well-formed `<resource>:<read|write|delete>` scope.
fn is_known_scope(scope: &str) -> bool {
    match scope.split_once(':') {
        None => matches!(scope, "default" | "openid" | "email" | "profile"),
        Some((resource, action)) => {
            !resource.is_empty()
                && resource
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
                && matches!(action, "read" | "write" | "delete")
        }
    }
}

/// Whether `value` can be a PKCE verifier or S256 challenge (RFC 7636: 43 to 128 unreserved
/// characters).
fn is_pkce_value(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
}

/// `GET /-/oauth_authorize`: the consent page (or, with auto-approve, the code at once).
async fn authorize(State(sandbox): State<Sandbox>, Query(params): Query<Params>) -> Response {
    match validate(&sandbox, &params) {
        Err(refusal) => refusal.into_response(),
        Ok(authorization) if sandbox.config().auto_approve => approve(&sandbox, authorization),
        Ok(authorization) => consent_page(&authorization),
    }
}

/// `POST /-/oauth_authorize`: the consent form's Allow or Deny, re-checked in full.
async fn decide(
    State(sandbox): State<Sandbox>,
    form: Result<Form<Params>, FormRejection>,
) -> Response {
    let Ok(Form(params)) = form else {
        return error_page("invalid_request: The consent form was not sent as a form.");
    };
    let authorization = match validate(&sandbox, &params) {
        Ok(authorization) => authorization,
        Err(refusal) => return refusal.into_response(),
    };
    match param(&params, "decision") {
        Some("allow") => approve(&sandbox, authorization),
        Some("deny") => redirect(
            &authorization.redirect_uri,
            &[
                ("error", "access_denied"),
                ("state", authorization.state.as_str()),
            ],
        ),
        _ => error_page("invalid_request: Choose Allow or Deny."),
    }
}

/// Issues a code for `authorization` and sends the browser back with it.
fn approve(sandbox: &Sandbox, authorization: Authorization) -> Response {
    let code = sandbox.tokens().issue_code(PendingCode {
        client_id: authorization.app.client_id,
        redirect_uri: authorization.redirect_uri.clone(),
        code_challenge: authorization.code_challenge,
        user_gid: authorization.user["gid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        scopes: authorization.scopes,
        resource: authorization.resource,
        expires_at: Utc::now() + CODE_LIFETIME,
    });
    redirect(
        &authorization.redirect_uri,
        &[
            ("code", code.as_str()),
            ("state", authorization.state.as_str()),
        ],
    )
}

/// What a scope lets the app do, in words.
fn describe_scope(scope: &str) -> String {
    match scope.split_once(':') {
        None => match scope {
            "default" => "Full permissions: everything you can see and do in Asana".to_owned(),
            "openid" => "Know who you are".to_owned(),
            "email" => "See your email address".to_owned(),
            _ => "See your name and profile photo".to_owned(),
        },
        Some((resource, action)) => {
            let resource = resource.replace(['_', '.'], " ");
            match action {
                "read" => format!("View your {resource}"),
                "write" => format!("Create and change your {resource}"),
                _ => format!("Delete your {resource}"),
            }
        }
    }
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The consent page: who asks, for what, as whom, and an Allow/Deny form that posts every
/// authorization parameter back to `/-/oauth_authorize`.
fn consent_page(authorization: &Authorization) -> Response {
    let app = escape(&authorization.app.name);
    let user_name = escape(authorization.user["name"].as_str().unwrap_or_default());
    let user_email = escape(authorization.user["email"].as_str().unwrap_or_default());
    let user_gid = authorization.user["gid"].as_str().unwrap_or_default();
    let scope = authorization.scopes.join(" ");
    let mut fields = vec![
        ("client_id", authorization.app.client_id.as_str()),
        ("redirect_uri", authorization.redirect_uri.as_str()),
        ("response_type", "code"),
        ("state", authorization.state.as_str()),
        ("code_challenge", authorization.code_challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("scope", scope.as_str()),
        (SANDBOX_USER, user_gid),
    ];
    if let Some(resource) = &authorization.resource {
        fields.push(("resource", resource.as_str()));
    }
    let hidden: String = fields
        .iter()
        .map(|(name, value)| {
            format!(
                "      <input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape(value)
            )
        })
        .collect();
    let scopes: String = authorization
        .scopes
        .iter()
        .map(|s| {
            format!(
                "      <li><code>{}</code> {}</li>\n",
                escape(s),
                escape(&describe_scope(s))
            )
        })
        .collect();
    let destination = reqwest::Url::parse(&authorization.redirect_uri)
        .ok()
        .map(|u| u.origin())
        .filter(|origin| origin.is_tuple())
        .map(|origin| origin.ascii_serialization())
        .unwrap_or_else(|| authorization.redirect_uri.clone());
    let surface = match authorization.app.kind {
        AppKind::Rest => "the Asana API",
        AppKind::Mcp => "Asana's MCP server",
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Authorize {app} - Asana sandbox</title>
  <style>
    body {{ font-family: system-ui, sans-serif; background: #f6f8f9; margin: 0; }}
    main {{ max-width: 28rem; margin: 4rem auto; background: #fff; border-radius: 8px;
           padding: 2rem; box-shadow: 0 1px 4px rgba(0, 0, 0, .15); }}
    h1 {{ font-size: 1.3rem; }}
    ul {{ padding-left: 1.2rem; }}
    .who {{ color: #555; }}
    .actions {{ display: flex; gap: .75rem; justify-content: flex-end; margin-top: 1.5rem; }}
    button {{ font-size: 1rem; padding: .5rem 1.25rem; border-radius: 6px; cursor: pointer; }}
    #allow {{ background: #4573d2; color: #fff; border: 1px solid #4573d2; }}
    #deny {{ background: #fff; border: 1px solid #888; }}
    footer {{ margin-top: 1.5rem; font-size: .8rem; color: #777; }}
  </style>
</head>
<body>
  <main>
    <h1>{app} wants to access your Asana account</h1>
    <p class="who">Signed in as <strong id="user">{user_name}</strong> ({user_email})</p>
    <p>{app} will be able to use {surface} as you:</p>
    <ul id="scopes">
{scopes}    </ul>
    <p>After you choose, you will be sent back to <strong>{destination}</strong>.</p>
    <form method="post" action="/-/oauth_authorize">
{hidden}      <div class="actions">
        <button type="submit" id="deny" name="decision" value="deny">Deny</button>
        <button type="submit" id="allow" name="decision" value="allow">Allow</button>
      </div>
    </form>
    <footer>Asana sandbox. To consent as someone else, add <code>{SANDBOX_USER}=&lt;user gid or email&gt;</code> to the authorize URL.</footer>
  </main>
</body>
</html>
"#,
        destination = escape(&destination),
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The token, revoke and introspection endpoints.

/// An OAuth error from the token or revoke endpoint: `{"error": "..."}`.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    /// Left out of `invalid_grant`, whose observed Asana body is the bare error.
    description: Option<&'static str>,
    /// Ask for HTTP Basic credentials (RFC 6749 §5.2, when the client used Basic).
    basic_challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: Option<&'static str>) -> Self {
        Self {
            status,
            error,
            description,
            basic_challenge: false,
        }
    }

    fn invalid_request(description: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(description),
        )
    }

    /// A dead, used, expired or mismatched code or refresh token. `why` goes to the debug
    /// log only.
    fn invalid_grant(why: &'static str) -> Self {
        debug!(reason = why, "token request refused");
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", None)
    }

    fn invalid_client(basic_challenge: bool) -> Self {
        Self {
            basic_challenge,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                Some("Client authentication failed."),
            )
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(description) = self.description {
            body["error_description"] = json!(description);
        }
        let mut response = (
            self.status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response();
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"asana-sandbox\""),
            );
        }
        response
    }
}

/// A form body, or `invalid_request`.
fn form_params(form: Result<Form<Params>, FormRejection>) -> Result<Params, OAuthError> {
    form.map(|Form(params)| params)
        .map_err(|_| OAuthError::invalid_request("Send an application/x-www-form-urlencoded body."))
}

/// The app whose credentials the request carries: HTTP Basic (`client_secret_basic`) when an
/// `Authorization: Basic` header is present, else the form's `client_id` and `client_secret`.
fn authenticate_client(
    sandbox: &Sandbox,
    headers: &HeaderMap,
    params: &Params,
) -> Result<App, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..6)
                .filter(|scheme| scheme.eq_ignore_ascii_case("basic "))
                .map(|_| v[6..].trim())
        });
    let (client_id, secret) = match basic {
        Some(encoded) => basic_credentials(encoded).ok_or(OAuthError::invalid_client(true))?,
        None => (
            param(params, "client_id").unwrap_or_default().to_owned(),
            param(params, "client_secret")
                .unwrap_or_default()
                .to_owned(),
        ),
    };
    let app = sandbox.tokens().apps.get(&client_id).cloned();
    app.filter(|app| constant_time_eq(app.client_secret.as_bytes(), secret.as_bytes()))
        .ok_or(OAuthError::invalid_client(basic.is_some()))
}

/// `client_id` and `client_secret` from HTTP Basic credentials (each form-urlencoded before
/// base64, RFC 6749 §2.3.1).
fn basic_credentials(encoded: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(base64::decode(encoded)?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// `POST /-/oauth_token`: the authorization-code and refresh-token grants.
async fn token(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    form: Result<Form<Params>, FormRejection>,
) -> Result<Response, OAuthError> {
    let params = form_params(form)?;
    let grant_type = param(&params, "grant_type")
        .ok_or_else(|| OAuthError::invalid_request("The `grant_type` parameter is required."))?;
    if !matches!(grant_type, "authorization_code" | "refresh_token") {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            Some("The sandbox supports authorization_code and refresh_token."),
        ));
    }
    let app = authenticate_client(&sandbox, &headers, &params)?;
    let issued = if grant_type == "authorization_code" {
        exchange_code(&sandbox, &app, &params)?
    } else {
        refresh(&sandbox, &app, &params)?
    };
    Ok(token_response(&sandbox, issued))
}

/// Redeems an authorization code: single use, unexpired, same client and redirect URI, and a
/// `code_verifier` that answers the S256 challenge.
fn exchange_code(sandbox: &Sandbox, app: &App, params: &Params) -> Result<Issued, OAuthError> {
    let code = param(params, "code")
        .ok_or_else(|| OAuthError::invalid_request("The `code` parameter is required."))?;
    let pending = sandbox
        .tokens()
        .take_code(code)
        .ok_or_else(|| OAuthError::invalid_grant("code unknown, used or expired"))?;
    if pending.client_id != app.client_id {
        return Err(OAuthError::invalid_grant("code issued to another client"));
    }
    if param(params, "redirect_uri") != Some(pending.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization",
        ));
    }
    let verified = param(params, "code_verifier").is_some_and(|verifier| {
        is_pkce_value(verifier)
            && constant_time_eq(
                pkce_challenge(verifier).as_bytes(),
                pending.code_challenge.as_bytes(),
            )
    });
    if !verified {
        return Err(OAuthError::invalid_grant("code_verifier missing or wrong"));
    }
    if let (Some(bound), Some(asked)) = (&pending.resource, param(params, "resource"))
        && bound != asked
    {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            Some("The `resource` differs from the one authorized."),
        ));
    }
    Ok(sandbox
        .tokens()
        .grant(&app.client_id, &pending.user_gid, pending.scopes))
}

/// A new access token from a live refresh token of `app` (and a new refresh token when
/// rotation is on). Each refresh served is counted under `token_key(client_id)`, a key that
/// stays put when refresh tokens rotate.
fn refresh(sandbox: &Sandbox, app: &App, params: &Params) -> Result<Issued, OAuthError> {
    let refresh_token = param(params, "refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("The `refresh_token` parameter is required."))?;
    let issued = sandbox
        .tokens()
        .refresh(&app.client_id, refresh_token)
        .ok_or_else(|| OAuthError::invalid_grant("refresh token unknown, revoked or rotated"))?;
    sandbox.0.limits.count_refresh(&token_key(&app.client_id));
    Ok(issued)
}

/// The token endpoint's success body, with the user in `data` as Asana returns it.
fn token_response(sandbox: &Sandbox, issued: Issued) -> Response {
    let user = sandbox
        .world()
        .get_typed(&issued.user_gid, "user")
        .cloned()
        .unwrap_or(Value::Null);
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "data": {
            "id": issued.user_gid.parse::<u64>().ok(),
            "gid": issued.user_gid,
            "name": user["name"],
            "email": user["email"],
        },
    });
    if let Some(refresh_token) = issued.refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

/// `POST /-/oauth_revoke`: a refresh token ends its grant and every access token minted from
/// it; an access token is refused (400); an unknown token, or another app's, gets 200 as at
/// Asana ("deauthorized or not found").
async fn revoke(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    form: Result<Form<Params>, FormRejection>,
) -> Result<StatusCode, OAuthError> {
    let params = form_params(form)?;
    let app = authenticate_client(&sandbox, &headers, &params)?;
    let token = param(&params, "token")
        .ok_or_else(|| OAuthError::invalid_request("The `token` parameter is required."))?;
    let mut tokens = sandbox.tokens();
    let owner = tokens.info(token)["client_id"].as_str().map(str::to_owned);
    if owner.is_some_and(|owner| owner != app.client_id) {
        return Ok(StatusCode::OK);
    }
    match tokens.revoke(token) {
        Revocation::Revoked | Revocation::Unknown => Ok(StatusCode::OK),
        Revocation::NotARefreshToken => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            Some("Send the refresh token: revoking it also ends its access tokens."),
        )),
    }
}

/// `POST /-/token_info`: what any token is and whether it is still active.
async fn token_info(
    State(sandbox): State<Sandbox>,
    form: Result<Form<Params>, FormRejection>,
) -> Result<Json<Value>, OAuthError> {
    let params = form_params(form)?;
    let token = param(&params, "token").unwrap_or_default();
    Ok(Json(sandbox.tokens().info(token)))
}

// ---------------------------------------------------------------------------------------------
// Discovery.

/// RFC 9728 protected-resource metadata for the MCP server, served at the root, at `/v2`
/// (where Asana serves it) and at the path-inserted `/v2/mcp`.
async fn protected_resource(State(sandbox): State<Sandbox>) -> Json<Value> {
    let base = issuer(&sandbox);
    Json(json!({
        "resource": format!("{base}/v2/mcp"),
        "authorization_servers": [base],
        "scopes_supported": ["default"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Asana sandbox MCP server",
    }))
}

/// RFC 8414 authorization-server metadata pointing at the sandbox's own endpoints.
async fn authorization_server(State(sandbox): State<Sandbox>) -> Json<Value> {
    let base = issuer(&sandbox);
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/-/oauth_authorize"),
        "token_endpoint": format!("{base}/-/oauth_token"),
        "revocation_endpoint": format!("{base}/-/oauth_revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

// ---------------------------------------------------------------------------------------------
// Encodings: PKCE's base64url and form-urlencoding (HTTP Basic's base64 is `crate::base64`).

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The S256 challenge of a PKCE verifier: base64url(SHA-256(verifier)), unpadded.
pub fn pkce_challenge(verifier: &str) -> String {
    let digest = Sha256::digest(verifier.as_bytes());
    let mut out = String::with_capacity(43);
    for chunk in digest.chunks(3) {
        let mut block = [0u8; 3];
        block[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(block[0]) << 16 | u32::from(block[1]) << 8 | u32::from(block[2]);
        for i in 0..=chunk.len() {
            let index = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(BASE64URL[index as usize]));
        }
    }
    out
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` is a space, `%XX` a byte).
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = bytes.get(i + 1..i + 3)?;
                out.extend(hex::decode(pair).ok()?);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn basic_credentials_are_base64_of_form_encoded_parts() {
        // base64("my%20app:s3cr%3At+x")
        assert_eq!(
            basic_credentials("bXklMjBhcHA6czNjciUzQXQreA=="),
            Some(("my app".to_owned(), "s3cr:t x".to_owned()))
        );
        assert!(form_decode("%zz").is_none());
        assert!(form_decode("%+1").is_none());
    }

    #[test]
    fn scopes_follow_asanas_rules() {
        assert_eq!(
            parse_scopes(AppKind::Rest, None),
            Some(vec!["default".to_owned()])
        );
        assert!(parse_scopes(AppKind::Rest, Some("tasks:read users:read")).is_some());
        assert!(parse_scopes(AppKind::Rest, Some("default openid email")).is_some());
        assert!(parse_scopes(AppKind::Rest, Some("default tasks:read")).is_none());
        assert!(parse_scopes(AppKind::Rest, Some("tasks:admin")).is_none());
        assert!(parse_scopes(AppKind::Mcp, Some("default")).is_some());
        assert!(parse_scopes(AppKind::Mcp, Some("tasks:read")).is_none());
    }

    #[test]
    fn codes_are_single_use_and_expire() {
        let mut tokens = crate::Tokens::new(std::time::Duration::from_secs(3600));
        let pending = |expires_at| PendingCode {
            client_id: "c".into(),
            redirect_uri: "http://localhost/cb".into(),
            code_challenge: pkce_challenge("v".repeat(43).as_str()),
            user_gid: "u".into(),
            scopes: vec!["default".into()],
            resource: None,
            expires_at,
        };
        let code = tokens.issue_code(pending(Utc::now() + CODE_LIFETIME));
        assert!(tokens.take_code(&code).is_some());
        assert!(tokens.take_code(&code).is_none(), "a code works once");
        let stale = tokens.issue_code(pending(Utc::now() - TimeDelta::seconds(1)));
        assert!(tokens.take_code(&stale).is_none(), "an expired code");
    }

    #[test]
    fn page_text_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
