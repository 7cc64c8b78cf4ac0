//! OAuth connect: authorization links (code flow with PKCE S256 and a single-use `state`) and
//! the HTTP callback that exchanges the code, identifies the Asana user and stores the
//! credential.
//!
//! - The `state` is 256 random bits; the database keeps only its SHA-256, bound to (tenant,
//!   connection, identifier, return URL), with an expiry. The callback marks it used in one
//!   conditional update, so a replay finds nothing.
//! - The PKCE verifier is a secret: it is kept only as Transit ciphertext under the tenant's key.
//! - No token, code, state, verifier or client secret ever reaches a page, a log line or an
//!   error message.
//! - The browser is sent to a `return_url` only when it is on `[oauth] return_url_allowlist`;
//!   otherwise token-vault shows its own result page.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentauth_audit::action;
use axum::Router;
use axum::extract::{Query, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::Error;
use crate::api::{account_event, identify};
use crate::audit::Audit;
use crate::connections::{Auth, Connection, Kind, Registry};
use crate::records::{Granted, PendingState, State, Store};
use crate::secrets::{Location, Secret, Secrets, Token};

/// The path of the callback on the HTTP listener.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// The `[oauth]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP callback (`/oauth/callback`) is served. The connections' `redirect_url`
    /// must reach it.
    pub http_listen: SocketAddr,
    /// URL prefixes a `return_url` may start with (e.g. `https://app.example.com/`); a prefix
    /// matches only up to a path, query or fragment boundary. Empty: no return URL is accepted.
    pub return_url_allowlist: Vec<String>,
    /// How long an authorization link works.
    #[serde(with = "humantime_serde")]
    pub link_lifetime: Duration,
    /// `GetAccessToken` refreshes an OAuth token first when it expires within this margin (or
    /// within the request's `min_valid_for`, when that is longer).
    #[serde(with = "humantime_serde")]
    pub refresh_margin: Duration,
    /// How often (±20% jitter) the sweeper refreshes the OAuth credentials that expire within
    /// `refresh_margin`, so calls rarely wait on a refresh.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How many refreshes one sweep runs at a time.
    pub sweep_concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_listen: SocketAddr::from(([127, 0, 0, 1], 50060)),
            return_url_allowlist: Vec::new(),
            link_lifetime: Duration::from_secs(600),
            refresh_margin: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(60),
            sweep_concurrency: 4,
        }
    }
}

/// A link for the user's browser.
#[derive(Debug)]
pub struct Link {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The OAuth connect flow.
#[derive(Debug)]
pub struct Flow {
    pub config: Config,
    pub connections: Arc<Registry>,
    pub secrets: Arc<Secrets>,
    pub records: Store,
    pub audit: Arc<Audit>,
    /// For Asana's token endpoint and `/users/me`.
    pub http: reqwest::Client,
}

/// `n` random bytes, base64url without padding.
fn random_text(n: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("no randomness available: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether `url` starts with `prefix` at a boundary: the prefix ends with `/`, or the URL ends
/// there or goes on with a path, query or fragment.
fn matches_prefix(url: &str, prefix: &str) -> bool {
    url.strip_prefix(prefix).is_some_and(|rest| {
        prefix.ends_with('/')
            || rest.is_empty()
            || rest.starts_with('/')
            || rest.starts_with('?')
            || rest.starts_with('#')
    })
}

impl Flow {
    /// The normalised `return_url` when it is an http(s) URL on the allow-list.
    pub fn allowed_return_url(&self, return_url: &str) -> Result<String, Error> {
        let refuse = |description: &str| Error::InvalidArgument {
            field: "return_url",
            description: description.to_owned(),
        };
        let url = reqwest::Url::parse(return_url).map_err(|_| refuse("is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
            return Err(refuse("must be an http(s) URL without credentials"));
        }
        let normalised = url.to_string();
        let allowed = self
            .config
            .return_url_allowlist
            .iter()
            .any(|prefix| matches_prefix(&normalised, prefix));
        if allowed {
            Ok(normalised)
        } else {
            Err(refuse(
                "is not on the operator's allow-list (oauth.return_url_allowlist)",
            ))
        }
    }

    /// A fresh single-use authorization link for `identifier` of `tenant` on `connection`
    /// (already authorised), recorded as a pending consent.
    pub async fn create_link(
        &self,
        connection: &Connection,
        tenant: &str,
        identifier: &str,
        return_url: Option<&str>,
        replace_user: bool,
    ) -> Result<Link, Error> {
        if connection.auth != Auth::Oauth {
            return Err(Error::WrongAuthMethod {
                connection: connection.name.clone(),
                reason: "does not use OAuth: store its token with PutCredential",
            });
        }
        let return_url = return_url
            .map(|url| self.allowed_return_url(url))
            .transpose()?;
        let state = random_text(32)?;
        let verifier = random_text(32)?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let verifier_ciphertext = self.secrets.encrypt(tenant, verifier.as_bytes()).await?;
        let lifetime = TimeDelta::from_std(self.config.link_lifetime)
            .map_err(|_| Error::Internal("oauth.link_lifetime is out of range".into()))?;
        let expires_at = Utc::now() + lifetime;
        let mut url = reqwest::Url::parse(&connection.authorize_url).map_err(|_| {
            Error::Internal(format!(
                "connections.{}.authorize_url is not a URL",
                connection.name
            ))
        })?;
        let scope = match connection.kind {
            Kind::Mcp => "default".to_owned(),
            Kind::Rest => connection.scopes.join(" "),
        };
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", &connection.client_id)
                .append_pair("redirect_uri", &connection.redirect_url)
                .append_pair("response_type", "code")
                .append_pair("state", &state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if !scope.is_empty() {
                query.append_pair("scope", &scope);
            }
            if connection.kind == Kind::Mcp {
                query.append_pair("resource", &connection.resource);
            }
        }
        self.records
            .insert_oauth_state(&PendingState {
                state_sha256: sha256_hex(&state),
                tenant: tenant.to_owned(),
                connection_name: connection.name.clone(),
                identifier: identifier.to_owned(),
                verifier_ciphertext,
                return_url,
                expires_at,
                replace_user,
            })
            .await?;
        Ok(Link {
            url: url.to_string(),
            expires_at,
        })
    }

    /// The callback: everything after the user's browser comes back from Asana.
    async fn complete(&self, params: &HashMap<String, String>) -> Response {
        let Some(state) = params.get("state").filter(|s| !s.is_empty()) else {
            return page(
                StatusCode::BAD_REQUEST,
                "Link not recognised",
                "This page was opened without the sign-in details Asana sends back. Nothing was connected. Start again from the application.",
            );
        };
        let pending = match self.records.take_oauth_state(&sha256_hex(state)).await {
            Ok(Some(pending)) => pending,
            Ok(None) => {
                info!("an OAuth callback named an unknown, expired or used state");
                return page(
                    StatusCode::BAD_REQUEST,
                    "Link expired or already used",
                    "This sign-in link is unknown, has expired or was already used. Nothing was connected. Ask the application for a new link.",
                );
            }
            Err(error) => {
                warn!(%error, "cannot look up an OAuth state");
                return unavailable();
            }
        };
        let connection_name = pending.connection_name.as_str();
        if let Some(error) = params.get("error") {
            info!(
                connection = connection_name,
                error = error.as_str(),
                "an OAuth consent was not granted"
            );
            return if error == "access_denied" {
                page(
                    StatusCode::OK,
                    "You declined",
                    &format!(
                        "You declined access, so {} was not connected. You can close this window.",
                        escape(connection_name)
                    ),
                )
            } else {
                page(
                    StatusCode::BAD_REQUEST,
                    "Not connected",
                    &format!(
                        "Asana did not grant access ({}), so {} was not connected. Ask the application for a new link.",
                        escape(error),
                        escape(connection_name)
                    ),
                )
            };
        }
        let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
            return page(
                StatusCode::BAD_REQUEST,
                "Not connected",
                "Asana sent no authorization code back. Nothing was connected. Ask the application for a new link.",
            );
        };
        let Some(connection) = self.connections.get(connection_name) else {
            warn!(
                connection = connection_name,
                "an OAuth callback names a connection that is no longer configured"
            );
            return page(
                StatusCode::BAD_REQUEST,
                "Not connected",
                "This connection is no longer configured. Nothing was connected.",
            );
        };
        match self.connect(connection, &pending, code).await {
            Ok(account) => {
                info!(
                    account = %account.account_id,
                    credential_version = account.credential_version,
                    connection = connection_name,
                    "OAuth credential granted"
                );
                // Re-checked: the allow-list may have shrunk since the link was made.
                let return_url = pending
                    .return_url
                    .as_deref()
                    .and_then(|url| self.allowed_return_url(url).ok());
                match return_url {
                    Some(return_url) => see_other(&return_url, connection_name),
                    None => page(
                        StatusCode::OK,
                        "Connected",
                        &format!(
                            "{} is connected for {}. You can close this window.",
                            escape(connection_name),
                            escape(&pending.identifier)
                        ),
                    ),
                }
            }
            Err(Error::Unavailable { dependency, reason }) => {
                warn!(
                    connection = connection_name,
                    dependency, reason, "an OAuth connect failed"
                );
                unavailable()
            }
            Err(Error::UserMismatch) => {
                info!(
                    connection = connection_name,
                    "an OAuth consent signed in as another Asana user than the account's"
                );
                page(
                    StatusCode::CONFLICT,
                    "Another Asana user",
                    &format!(
                        "You signed in to Asana as another user than the one {} is connected as for {}, so nothing was changed. Sign in as that user, or ask the application for a link that replaces the connected user.",
                        escape(connection_name),
                        escape(&pending.identifier)
                    ),
                )
            }
            Err(error) => {
                warn!(connection = connection_name, %error, "an OAuth connect failed");
                page(
                    StatusCode::BAD_GATEWAY,
                    "Not connected",
                    "Asana did not accept the authorization, so nothing was connected. Ask the application for a new link.",
                )
            }
        }
    }

    /// Exchanges `code`, identifies the user, stores the credential and records the account.
    async fn connect(
        &self,
        connection: &Connection,
        pending: &PendingState,
        code: &str,
    ) -> Result<crate::records::Account, Error> {
        crate::audit::ready(&self.audit)?;
        let verifier = self
            .secrets
            .decrypt(&pending.tenant, &pending.verifier_ciphertext)
            .await?;
        let verifier = String::from_utf8(verifier)
            .map_err(|_| Error::Internal("a stored PKCE verifier is not text".into()))?;
        let secret_ref = connection.client_secret.as_ref().ok_or_else(|| {
            Error::Internal(format!(
                "connection `{}` has no client secret",
                connection.name
            ))
        })?;
        let client_secret = self
            .secrets
            .read_field(&secret_ref.path, &secret_ref.field)
            .await?;
        let granted = self
            .exchange(connection, code, &verifier, &client_secret)
            .await?;
        let access_token = Token::new(granted.access_token);
        let (gid, name) = match connection.kind {
            Kind::Rest => {
                let me = identify(&self.http, connection, &access_token).await?;
                (me.gid, me.name)
            }
            Kind::Mcp => {
                let user = granted.data.filter(|u| !u.gid.is_empty()).ok_or_else(|| {
                    Error::Internal("the token response names no Asana user".into())
                })?;
                (user.gid, user.name)
            }
        };
        let refresh_token = granted.refresh_token.map(Token::new);
        let existing = self
            .records
            .get(&pending.tenant, &connection.name, &pending.identifier)
            .await?;
        let replaced_user = existing
            .filter(|a| a.state != State::Revoked && !a.asana_user_gid.is_empty())
            .map(|a| a.asana_user_gid)
            .filter(|current| *current != gid);
        if let Some(current) = &replaced_user
            && !pending.replace_user
        {
            // Not this account's Asana user: the fresh grant is revoked, nothing is stored.
            let grant = refresh_token.as_ref().unwrap_or(&access_token);
            if let Err(error) = self.revoke(connection, grant).await {
                warn!(%error, "revoking a refused consent's grant failed");
            }
            let event = crate::audit::user_mismatch(&crate::audit::Mismatch {
                tenant: &pending.tenant,
                connection: &connection.name,
                identifier: &pending.identifier,
                current,
                presented: &gid,
                presented_key: "consented_asana_user_gid",
            });
            self.audit.record(event).await;
            return Err(Error::UserMismatch);
        }
        let expires_at = granted
            .expires_in
            .and_then(|s| TimeDelta::try_seconds(s.try_into().ok()?))
            .map(|lifetime| Utc::now() + lifetime);
        let scopes = match connection.kind {
            Kind::Mcp => vec!["default".to_owned()],
            Kind::Rest => connection.scopes.clone(),
        };
        let at = Location {
            tenant: &pending.tenant,
            connection: &connection.name,
            identifier: &pending.identifier,
        };
        let secret = Secret {
            access_token,
            refresh_token,
            expires_at,
            scopes: scopes.clone(),
        };
        let version = self.secrets.replace(at, &secret).await?;
        let account = self
            .records
            .grant(&Granted {
                tenant: &pending.tenant,
                connection_name: &connection.name,
                identifier: &pending.identifier,
                auth_method: Auth::Oauth,
                asana_user_gid: &gid,
                asana_user_name: &name,
                credential_version: version,
                expires_at,
                scopes: &scopes,
            })
            .await?;
        let mut event = account_event(&account, action::CREDENTIAL_GRANTED);
        event.details.insert("auth_method".into(), "oauth".into());
        if let Some(previous) = replaced_user {
            event
                .details
                .insert("replaced_asana_user_gid".into(), previous.into());
        }
        self.audit.record(event).await;
        Ok(account)
    }

    /// The authorization-code grant at the connection's token endpoint.
    async fn exchange(
        &self,
        connection: &Connection,
        code: &str,
        verifier: &str,
        client_secret: &Token,
    ) -> Result<TokenResponse, Error> {
        let response = self
            .http
            .post(&connection.token_url)
            .header(header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", connection.client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("redirect_uri", connection.redirect_url.as_str()),
                ("code", code),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .map_err(|e| Error::Unavailable {
                dependency: "asana",
                reason: e.without_url().to_string(),
            })?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Error::Unavailable {
                dependency: "asana",
                reason: format!("the token endpoint answered HTTP {status}"),
            });
        }
        if !status.is_success() {
            // Only the standard error code is reported: the body could echo what was sent.
            let error = read_json::<OAuthErrorBody>(response)
                .await
                .map(|b| b.error)
                .unwrap_or_default();
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(Error::Internal(format!(
                "the token endpoint refused the code exchange: HTTP {status} {error}"
            )));
        }
        let granted: TokenResponse = read_json(response).await.map_err(|reason| {
            Error::Internal(format!(
                "the token endpoint's answer is not a token response: {reason}"
            ))
        })?;
        if granted.access_token.is_empty() {
            return Err(Error::Internal(
                "the token endpoint's answer has no access token".into(),
            ));
        }
        Ok(granted)
    }

    /// The refresh-token grant at the connection's token endpoint.
    pub async fn refresh_grant(
        &self,
        connection: &Connection,
        refresh_token: &Token,
    ) -> Result<Refreshed, RefreshFailure> {
        let secret_ref = connection.client_secret.as_ref().ok_or_else(|| {
            RefreshFailure::Other(Error::Internal(format!(
                "connection `{}` has no client secret",
                connection.name
            )))
        })?;
        let client_secret = self
            .secrets
            .read_field(&secret_ref.path, &secret_ref.field)
            .await
            .map_err(RefreshFailure::Other)?;
        let response = self
            .http
            .post(&connection.token_url)
            .header(header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", connection.client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("refresh_token", refresh_token.expose()),
            ])
            .send()
            .await
            .map_err(|e| RefreshFailure::Transient(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(RefreshFailure::Transient(format!(
                "the token endpoint answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            let error = read_json::<OAuthErrorBody>(response)
                .await
                .map(|b| b.error)
                .unwrap_or_default();
            if error == "invalid_grant" {
                return Err(RefreshFailure::InvalidGrant);
            }
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(RefreshFailure::Other(Error::Internal(format!(
                "the token endpoint refused a refresh: HTTP {status} {error}"
            ))));
        }
        let granted: TokenResponse = read_json(response).await.map_err(|reason| {
            RefreshFailure::Transient(format!(
                "the token endpoint's answer is not a token response: {reason}"
            ))
        })?;
        if granted.access_token.is_empty() {
            return Err(RefreshFailure::Other(Error::Internal(
                "the token endpoint's answer has no access token".into(),
            )));
        }
        Ok(Refreshed {
            access_token: Token::new(granted.access_token),
            refresh_token: granted
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(Token::new),
            expires_at: granted
                .expires_in
                .and_then(|s| TimeDelta::try_seconds(s.try_into().ok()?))
                .map(|lifetime| Utc::now() + lifetime),
        })
    }

    /// Revokes the grant of `refresh_token` at the connection's revoke endpoint (RFC 7009 style:
    /// client id and secret, and the token, as a form).
    pub async fn revoke(
        &self,
        connection: &Connection,
        refresh_token: &Token,
    ) -> Result<(), Error> {
        if connection.revoke_url.is_empty() {
            return Err(Error::Internal(format!(
                "connection `{}` has no revoke_url",
                connection.name
            )));
        }
        let secret_ref = connection.client_secret.as_ref().ok_or_else(|| {
            Error::Internal(format!(
                "connection `{}` has no client secret",
                connection.name
            ))
        })?;
        let client_secret = self
            .secrets
            .read_field(&secret_ref.path, &secret_ref.field)
            .await?;
        let response = self
            .http
            .post(&connection.revoke_url)
            .header(header::ACCEPT, "application/json")
            .form(&[
                ("client_id", connection.client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("token", refresh_token.expose()),
            ])
            .send()
            .await
            .map_err(|e| Error::Unavailable {
                dependency: "asana",
                reason: e.without_url().to_string(),
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            // Only the status: the body could echo what was sent.
            Err(Error::Internal(format!(
                "the revoke endpoint answered HTTP {status}"
            )))
        }
    }

    /// The HTTP routes: the callback.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(CALLBACK_PATH, get(callback))
            .with_state(self)
    }
}

/// A refresh-token grant's new tokens.
#[derive(Debug)]
pub struct Refreshed {
    pub access_token: Token,
    /// Present when the provider rotated the refresh token.
    pub refresh_token: Option<Token>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a refresh-token grant failed.
#[derive(Debug)]
pub enum RefreshFailure {
    /// The refresh token is dead (revoked, expired or rotated away).
    InvalidGrant,
    /// A timeout, a refused connection, a 5xx or 429: worth retrying later.
    Transient(String),
    /// Anything else (a misconfigured app, Vault).
    Other(Error),
}

/// A token endpoint's successful answer, as far as it is used.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    data: Option<TokenUser>,
}

#[derive(Deserialize)]
struct TokenUser {
    #[serde(default)]
    gid: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    #[serde(default)]
    error: String,
}

async fn callback(
    AxumState(flow): AxumState<Arc<Flow>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    flow.complete(&params).await
}

/// A 303 to `return_url` with `connected=<connection>` added.
fn see_other(return_url: &str, connection: &str) -> Response {
    match reqwest::Url::parse(return_url) {
        Ok(mut url) => {
            url.query_pairs_mut().append_pair("connected", connection);
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, url.to_string()),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response()
        }
        Err(_) => page(
            StatusCode::OK,
            "Connected",
            &format!(
                "{} is connected. You can close this window.",
                escape(connection)
            ),
        ),
    }
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again later",
        "The connection could not be completed right now, so nothing was connected. Ask the application for a new link in a moment.",
    )
}

/// A plain HTML page; `body` is already escaped.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>{title}</title>\n</head>\n<body>\n  <h1>{title}</h1>\n  <p id=\"message\">{body}</p>\n</body>\n</html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

/// Escapes text for HTML.
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

/// The longest answer read from Asana's OAuth and user endpoints: a token response or a user
/// is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// `response`'s JSON body, read no further than [`MAX_ANSWER_BYTES`]; why not, without
/// quoting the body (it could hold a token).
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    mut response: reqwest::Response,
) -> Result<T, String> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
    {
        return Err(format!(
            "the answer is longer than {MAX_ANSWER_BYTES} bytes"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is longer than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("not the expected JSON ({e})"))
}

#[cfg(test)]
mod tests {
    use super::matches_prefix;

    #[test]
    fn return_url_prefixes_match_only_at_a_boundary() {
        assert!(matches_prefix(
            "https://app.example.com/done",
            "https://app.example.com"
        ));
        assert!(matches_prefix(
            "https://app.example.com/done",
            "https://app.example.com/"
        ));
        assert!(matches_prefix(
            "https://app.example.com?x=1",
            "https://app.example.com"
        ));
        assert!(!matches_prefix(
            "https://app.example.com.evil.test/",
            "https://app.example.com"
        ));
        assert!(!matches_prefix(
            "https://evil.test/",
            "https://app.example.com/"
        ));
    }
}
