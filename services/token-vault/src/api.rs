//! The `agentauth.vault.v1.TokenVault` gRPC API.

use std::sync::Arc;

use agentauth_audit::{CredentialRef, Event, Outcome, Subject, action};
use agentauth_grpc::Caller;
use agentauth_proto::vault::v1 as pb;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::Error;
use crate::audit::Audit;
use crate::connections::{Auth, Connection, Kind, Registry};
use crate::oauth::Flow;
use crate::records::{Account, Filter, Granted, State, Store};
use crate::refresh::{Current, Refresher};
use crate::secrets::{Location, Secret, Secrets, Token};

#[derive(Debug)]
pub(crate) struct TokenVaultApi {
    pub connections: Arc<Registry>,
    pub secrets: Arc<Secrets>,
    pub records: Store,
    pub audit: Arc<Audit>,
    /// For Asana (token validation).
    pub http: reqwest::Client,
    /// OAuth connect: authorization links.
    pub oauth: Arc<Flow>,
    /// Access tokens, refreshed when needed.
    pub refresher: Arc<Refresher>,
    /// `GetAccessToken` refreshes tokens expiring within this margin first.
    pub refresh_margin: std::time::Duration,
    /// The account change log, for `WatchAccountChanges`.
    pub changes: Arc<crate::changes::Changes>,
    /// How long a key rotation waits for writers that encrypted just before it (twice the
    /// Vault request timeout; see `rotation`).
    pub rotation_settle: std::time::Duration,
}

/// The longest tenant, connection name or identifier accepted.
const MAX_NAME: usize = 256;
/// The longest `min_valid_for` accepted.
const MAX_MIN_VALID_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The longest token accepted.
const MAX_TOKEN: usize = 8 * 1024;

/// A required request field: present and not too long.
fn required(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    let problem = if value.is_empty() {
        "is required".to_owned()
    } else if value.len() > max {
        format!("must be at most {max} bytes")
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument {
        field,
        description: problem,
    })
}

/// `GET /users/me`'s answer, as far as it is used.
#[derive(Deserialize)]
struct Me {
    data: MeData,
}

#[derive(Deserialize)]
pub(crate) struct MeData {
    pub gid: String,
    #[serde(default)]
    pub name: String,
}

impl TokenVaultApi {
    /// The connection named exactly `name`, or NOT_FOUND naming the closest ones `caller` may
    /// use (names it may not use are never suggested).
    fn connection(&self, caller: &Caller, name: &str) -> Result<&Connection, Error> {
        self.connections
            .get(name)
            .ok_or_else(|| Error::UnknownConnection {
                name: name.to_owned(),
                suggestions: self
                    .connections
                    .close_to(name)
                    .into_iter()
                    .filter(|n| caller.check_connection(n).is_ok())
                    .collect(),
            })
    }

    /// Checks the caller for `tenant` (first, so a foreign tenant is PERMISSION_DENIED whatever
    /// else the request says), finds the connection (NOT_FOUND suggests only names the caller
    /// may use, as `GetConnection` does), then checks the caller for it.
    fn authorise(
        &self,
        caller: &Caller,
        tenant: &str,
        connection_name: &str,
    ) -> Result<&Connection, Error> {
        required("tenant", tenant, MAX_NAME)?;
        caller.check_tenant(tenant)?;
        required("connection_name", connection_name, MAX_NAME)?;
        let connection = self.connection(caller, connection_name)?;
        caller.check_connection(connection_name)?;
        Ok(connection)
    }

    /// The account of (tenant, connection, identifier), after authorising the caller.
    async fn account(
        &self,
        caller: &Caller,
        tenant: &str,
        connection_name: &str,
        identifier: &str,
    ) -> Result<(&Connection, Account), Error> {
        let connection = self.authorise(caller, tenant, connection_name)?;
        required("identifier", identifier, MAX_NAME)?;
        let account = self
            .records
            .get(tenant, connection_name, identifier)
            .await?
            .ok_or_else(|| Error::AccountNotFound {
                connection: connection_name.to_owned(),
                identifier: identifier.to_owned(),
            })?;
        Ok((connection, account))
    }

    async fn put(&self, caller: &Caller, r: &pb::PutCredentialRequest) -> Result<Account, Error> {
        let connection = self.authorise(caller, &r.tenant, &r.connection_name)?;
        required("identifier", &r.identifier, MAX_NAME)?;
        required("token", &r.token, MAX_TOKEN)?;
        if connection.auth == Auth::Oauth {
            return Err(Error::WrongAuthMethod {
                connection: connection.name.clone(),
                reason: "uses OAuth: connect it with CreateAuthorizationLink, not PutCredential",
            });
        }
        crate::audit::ready(&self.audit)?;
        let token = Token::new(r.token.clone());
        let me = identify(&self.http, connection, &token).await?;
        let replaced_user = self
            .records
            .get(&r.tenant, &r.connection_name, &r.identifier)
            .await?
            .filter(|a| a.state != State::Revoked && !a.asana_user_gid.is_empty())
            .map(|a| a.asana_user_gid)
            .filter(|current| *current != me.gid);
        if let Some(current) = &replaced_user
            && !r.replace_user
        {
            let mut refused = crate::audit::user_mismatch(&crate::audit::Mismatch {
                tenant: &r.tenant,
                connection: &r.connection_name,
                identifier: &r.identifier,
                current,
                presented: &me.gid,
                presented_key: "presented_asana_user_gid",
            });
            refused.actor.identifier = Some(caller.name().to_owned());
            self.audit.record(refused).await;
            return Err(Error::UserMismatch);
        }
        let at = Location {
            tenant: &r.tenant,
            connection: &r.connection_name,
            identifier: &r.identifier,
        };
        let secret = Secret {
            access_token: token,
            refresh_token: None,
            expires_at: None,
            scopes: connection.scopes.clone(),
        };
        let version = self
            .secrets
            .replace(at, &secret)
            .await
            .inspect_err(|error| warn!(%error, "storing a credential failed"))?;
        let account = self
            .records
            .grant(&Granted {
                tenant: &r.tenant,
                connection_name: &r.connection_name,
                identifier: &r.identifier,
                auth_method: connection.auth,
                asana_user_gid: &me.gid,
                asana_user_name: &me.name,
                credential_version: version,
                expires_at: None,
                scopes: &connection.scopes,
            })
            .await?;
        let mut granted = event(caller, &account, action::CREDENTIAL_GRANTED);
        if let Some(previous) = replaced_user {
            granted
                .details
                .insert("replaced_asana_user_gid".into(), previous.into());
        }
        self.audit.record(granted).await;
        info!(
            account = %account.account_id,
            credential_version = account.credential_version,
            connection = %account.connection_name,
            "credential granted"
        );
        Ok(account)
    }

    /// The account a token reader asks a token of; one that never connected (or whose
    /// secret is gone) needs a credential: AUTH_REQUIRED with what to do, as for a revoked one.
    async fn token_account(
        &self,
        caller: &Caller,
        tenant: &str,
        connection_name: &str,
        identifier: &str,
    ) -> Result<(&Connection, Account), Error> {
        match self
            .account(caller, tenant, connection_name, identifier)
            .await
        {
            Err(Error::AccountNotFound { .. }) => {
                let connection = self.authorise(caller, tenant, connection_name)?;
                Err(self
                    .refresher
                    .auth_required(connection, tenant, identifier)
                    .await)
            }
            found => found,
        }
    }

    async fn access_token(
        &self,
        caller: &Caller,
        r: &pb::GetAccessTokenRequest,
    ) -> Result<Current, Error> {
        let (connection, account) = self
            .token_account(caller, &r.tenant, &r.connection_name, &r.identifier)
            .await?;
        let min_valid_for = match r.min_valid_for {
            None => std::time::Duration::ZERO,
            Some(d) => std::time::Duration::try_from(d).map_err(|_| Error::InvalidArgument {
                field: "min_valid_for",
                description: "must be a non-negative duration".to_owned(),
            })?,
        };
        if min_valid_for > MAX_MIN_VALID_FOR {
            return Err(Error::InvalidArgument {
                field: "min_valid_for",
                description: format!("must be at most {}s", MAX_MIN_VALID_FOR.as_secs()),
            });
        }
        self.refresher
            .access(
                connection,
                account,
                min_valid_for.max(self.refresh_margin),
                None,
            )
            .await
    }

    async fn rejected_token(
        &self,
        caller: &Caller,
        r: &pb::ReportRejectedTokenRequest,
    ) -> Result<Current, Error> {
        let (connection, account) = self
            .token_account(caller, &r.tenant, &r.connection_name, &r.identifier)
            .await?;
        info!(
            account = %account.account_id,
            credential_version = r.credential_version,
            "a token was reported rejected"
        );
        self.refresher
            .access(
                connection,
                account,
                self.refresh_margin,
                Some(r.credential_version),
            )
            .await
    }

    async fn list(
        &self,
        caller: &Caller,
        r: &pb::ListAccountsRequest,
    ) -> Result<pb::ListAccountsResponse, Error> {
        required("tenant", &r.tenant, MAX_NAME)?;
        caller.check_tenant(&r.tenant)?;
        if let Some(connection) = &r.connection_name {
            self.authorise(caller, &r.tenant, connection)?;
        }
        let state = r
            .state
            .map(|s| match pb::AccountState::try_from(s) {
                Ok(pb::AccountState::Pending) => Ok(State::Pending),
                Ok(pb::AccountState::Active) => Ok(State::Active),
                Ok(pb::AccountState::Expired) => Ok(State::Expired),
                Ok(pb::AccountState::NeedsReauth) => Ok(State::NeedsReauth),
                Ok(pb::AccountState::Revoked) => Ok(State::Revoked),
                _ => Err(Error::InvalidArgument {
                    field: "state",
                    description: "must be a defined account state".to_owned(),
                }),
            })
            .transpose()?;
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(
                hex::decode(token)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|id| uuid::Uuid::parse_str(id).is_ok())
                    .ok_or_else(|| Error::InvalidArgument {
                        field: "page_token",
                        description: "is not a token this service issued".to_owned(),
                    })?,
            ),
        };
        let size = match r.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut scanned = self
            .records
            .list(&Filter {
                tenant: &r.tenant,
                connection_name: r.connection_name.as_deref(),
                state,
                after: after.as_deref(),
                limit: size + 1,
            })
            .await?;
        let more = scanned.len() > size;
        scanned.truncate(size);
        let next_page_token = match (more, scanned.last()) {
            (true, Some(last)) => hex::encode(&last.account_id),
            _ => String::new(),
        };
        // Only accounts of connections this caller may use (a page may come out shorter).
        let accounts = scanned
            .iter()
            .filter(|a| caller.check_connection(&a.connection_name).is_ok())
            .map(to_wire)
            .collect();
        Ok(pb::ListAccountsResponse {
            accounts,
            next_page_token,
        })
    }

    /// Revokes `account`'s OAuth grant at Asana with its stored refresh token, best effort:
    /// whether Asana confirmed the revocation. Failures are logged (never a token).
    async fn revoke_upstream(&self, connection: &Connection, account: &Account) -> bool {
        if account.auth_method != Auth::Oauth || connection.auth != Auth::Oauth {
            return false;
        }
        let at = Location {
            tenant: &account.tenant,
            connection: &account.connection_name,
            identifier: &account.identifier,
        };
        let refresh_token = match self.secrets.read(at).await {
            Ok(Some((secret, _))) => secret.refresh_token,
            Ok(None) => None,
            Err(error) => {
                warn!(account = %account.account_id, %error, "reading a credential to revoke it failed");
                return false;
            }
        };
        let Some(refresh_token) = refresh_token else {
            info!(account = %account.account_id, "no refresh token is stored, so nothing is revoked at Asana");
            return false;
        };
        match self.oauth.revoke(connection, &refresh_token).await {
            Ok(()) => true,
            Err(error) => {
                warn!(account = %account.account_id, %error, "revoking a grant at Asana failed");
                false
            }
        }
    }

    /// Disconnects an account: revokes an OAuth grant at Asana (best effort), then destroys
    /// every stored version and marks the account REVOKED. Also whether Asana revoked it.
    async fn disconnect(
        &self,
        caller: &Caller,
        r: &pb::DisconnectAccountRequest,
    ) -> Result<(Account, bool), Error> {
        let (connection, account) = self
            .account(caller, &r.tenant, &r.connection_name, &r.identifier)
            .await?;
        crate::audit::ready(&self.audit)?;
        let revoked_upstream = self.revoke_upstream(connection, &account).await;
        self.secrets
            .destroy(Location {
                tenant: &r.tenant,
                connection: &r.connection_name,
                identifier: &r.identifier,
            })
            .await
            .inspect_err(|error| warn!(%error, "destroying a credential failed"))?;
        let account = self
            .records
            .set_state(&account.account_id, State::Revoked, "")
            .await?;
        let mut revoked = event(caller, &account, action::CREDENTIAL_REVOKED);
        revoked
            .details
            .insert("revoked_upstream".into(), revoked_upstream.into());
        if !r.reason.is_empty() {
            let reason: String = r.reason.chars().take(1024).collect();
            revoked.details.insert("reason".into(), reason.into());
        }
        self.audit.record(revoked).await;
        info!(account = %account.account_id, revoked_upstream, "account disconnected");
        Ok((account, revoked_upstream))
    }

    /// Revokes every OAuth grant among `accounts` at Asana, best effort; how many Asana
    /// confirmed.
    async fn revoke_tenant_upstream(&self, accounts: &[Account]) -> u64 {
        let mut revoked = 0;
        for account in accounts {
            if account.auth_method != Auth::Oauth || account.state == State::Revoked {
                continue;
            }
            let Some(connection) = self.connections.get(&account.connection_name) else {
                continue;
            };
            if self.revoke_upstream(connection, account).await {
                revoked += 1;
            }
        }
        revoked
    }
}

/// The Asana user `token` acts as, or why Asana would not say.
pub(crate) async fn identify(
    http: &reqwest::Client,
    connection: &Connection,
    token: &Token,
) -> Result<MeData, Error> {
    let url = format!("{}/users/me", connection.api_base_url.trim_end_matches('/'));
    let response = http
        .get(&url)
        .bearer_auth(token.expose())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| Error::Unavailable {
            dependency: "asana",
            reason: e.without_url().to_string(),
        })?;
    let status = response.status();
    match status.as_u16() {
        200 => {}
        401 | 403 => {
            return Err(Error::InvalidArgument {
                field: "token",
                description: "the token was refused by Asana".to_owned(),
            });
        }
        429 | 500..=599 => {
            return Err(Error::Unavailable {
                dependency: "asana",
                reason: format!("GET /users/me answered HTTP {status}"),
            });
        }
        _ => {
            return Err(Error::Internal(format!(
                "asana answered GET /users/me with HTTP {status}"
            )));
        }
    }
    let me: Me = crate::oauth::read_json(response).await.map_err(|reason| {
        Error::Internal(format!("asana's /users/me answer is not a user: {reason}"))
    })?;
    if me.data.gid.is_empty() {
        return Err(Error::Internal(
            "asana's /users/me answer has no gid".into(),
        ));
    }
    Ok(me.data)
}

/// An audit event about `account` that `caller` caused.
fn event(caller: &Caller, account: &Account, what: &str) -> Event {
    let mut event = account_event(account, what);
    event.actor.identifier = Some(caller.name().to_owned());
    event
}

/// An audit event of token-vault's about `account` (no caller: a consent in a browser, the
/// sweeper, a refresh).
pub(crate) fn account_event(account: &Account, what: &str) -> Event {
    let mut event = Event::new(
        account.tenant.as_str(),
        crate::audit::SERVICE,
        what,
        Outcome::Success,
    );
    event.subject = Subject {
        connection_name: Some(account.connection_name.clone()),
        identifier: Some(account.identifier.clone()),
        asana_user_gid: Some(account.asana_user_gid.clone()).filter(|g| !g.is_empty()),
    };
    event.credential = Some(CredentialRef {
        account_id: account.account_id.clone(),
        version: account.credential_version,
    });
    event
}

fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The wire form of an account: never a secret, since the record holds none.
fn to_wire(account: &Account) -> pb::Account {
    pb::Account {
        account_id: account.account_id.clone(),
        tenant: account.tenant.clone(),
        connection_name: account.connection_name.clone(),
        identifier: account.identifier.clone(),
        state: match account.state {
            State::Pending => pb::AccountState::Pending,
            State::Active => pb::AccountState::Active,
            State::Expired => pb::AccountState::Expired,
            State::NeedsReauth => pb::AccountState::NeedsReauth,
            State::Revoked => pb::AccountState::Revoked,
        }
        .into(),
        state_reason: account.state_reason.clone(),
        auth_method: match account.auth_method {
            Auth::Oauth => pb::AuthMethod::Oauth,
            Auth::Pat => pb::AuthMethod::Pat,
            Auth::ServiceAccount => pb::AuthMethod::ServiceAccount,
        }
        .into(),
        asana_user_gid: account.asana_user_gid.clone(),
        asana_user_name: account.asana_user_name.clone(),
        credential_version: account.credential_version,
        expires_at: account.expires_at.map(timestamp),
        scopes: account.scopes.clone(),
        created_at: Some(timestamp(account.created_at)),
        updated_at: Some(timestamp(account.updated_at)),
        last_refreshed_at: account.last_refreshed_at.map(timestamp),
    }
}

/// `ListConnections`' page size when the request names none, and the largest allowed.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// Checks a webhook secret request: the caller is bound to `tenant`, and the subscription id
/// is given and of a sane length.
fn webhook_subscription(caller: &Caller, tenant: &str, subscription_id: &str) -> Result<(), Error> {
    required("tenant", tenant, MAX_NAME)?;
    caller.check_tenant(tenant)?;
    required("subscription_id", subscription_id, MAX_NAME)
}

#[tonic::async_trait]
impl pb::token_vault_server::TokenVault for TokenVaultApi {
    type WatchAccountChangesStream = tonic::codegen::BoxStream<pb::WatchAccountChangesResponse>;

    async fn watch_account_changes(
        &self,
        request: Request<pb::WatchAccountChangesRequest>,
    ) -> Result<Response<Self::WatchAccountChangesStream>, Status> {
        let caller = Caller::shared(&request)?;
        let after = request.get_ref().after_sequence;
        Ok(Response::new(Box::pin(
            self.changes.clone().stream(caller, after),
        )))
    }

    async fn put_webhook_secret(
        &self,
        request: Request<pb::PutWebhookSecretRequest>,
    ) -> Result<Response<pb::PutWebhookSecretResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        webhook_subscription(caller, &r.tenant, &r.subscription_id)?;
        required("secret", &r.secret, MAX_TOKEN)?;
        // Noted first, so a secret in Vault is always one a key rotation finds.
        self.records
            .keep_webhook_secret(&r.tenant, &r.subscription_id)
            .await
            .map_err(Error::from)?;
        self.secrets
            .write_webhook_secret(&r.tenant, &r.subscription_id, &Token::new(r.secret.clone()))
            .await?;
        Ok(Response::new(pb::PutWebhookSecretResponse {}))
    }

    async fn get_webhook_secret(
        &self,
        request: Request<pb::GetWebhookSecretRequest>,
    ) -> Result<Response<pb::GetWebhookSecretResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        webhook_subscription(caller, &r.tenant, &r.subscription_id)?;
        let secret = self
            .secrets
            .read_webhook_secret(&r.tenant, &r.subscription_id)
            .await?
            .ok_or_else(|| Error::WebhookSecretNotFound {
                subscription_id: r.subscription_id.clone(),
            })?;
        // A secret kept before token-vault noted them is noted when it is first read.
        self.records
            .keep_webhook_secret(&r.tenant, &r.subscription_id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::GetWebhookSecretResponse {
            secret: secret.expose().to_owned(),
        }))
    }

    async fn delete_webhook_secret(
        &self,
        request: Request<pb::DeleteWebhookSecretRequest>,
    ) -> Result<Response<pb::DeleteWebhookSecretResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        webhook_subscription(caller, &r.tenant, &r.subscription_id)?;
        self.secrets
            .destroy_webhook_secret(&r.tenant, &r.subscription_id)
            .await?;
        self.records
            .forget_webhook_secret(&r.tenant, &r.subscription_id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::DeleteWebhookSecretResponse {}))
    }

    async fn rotate_tenant_key(
        &self,
        request: Request<pb::RotateTenantKeyRequest>,
    ) -> Result<Response<pb::RotateTenantKeyResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = &request.get_ref().tenant;
        required("tenant", tenant, MAX_NAME)?;
        caller.check_tenant(tenant).map_err(Error::from)?;
        crate::audit::ready(&self.audit)?;
        let rotation = crate::rotation::Rotation {
            secrets: &self.secrets,
            records: &self.records,
            settle: self.rotation_settle,
        };
        let rotated = rotation
            .rotate(tenant)
            .await
            .inspect_err(|error| warn!(%error, "rotating a tenant key failed"))?
            .ok_or_else(|| Error::TenantKeyNotFound {
                tenant: tenant.clone(),
            })?;
        let mut event = Event::new(
            tenant.as_str(),
            crate::audit::SERVICE,
            action::TENANT_KEY_ROTATED,
            Outcome::Success,
        );
        event.actor.identifier = Some(caller.name().to_owned());
        for (key, value) in [
            ("key_version", rotated.key_version),
            ("credentials_rewrapped", rotated.credentials),
            ("webhook_secrets_rewrapped", rotated.webhook_secrets),
            ("consents_rewrapped", rotated.consents),
        ] {
            event.details.insert(key.into(), value.into());
        }
        self.audit.record(event).await;
        info!(
            key_version = rotated.key_version,
            credentials_rewrapped = rotated.credentials,
            webhook_secrets_rewrapped = rotated.webhook_secrets,
            consents_rewrapped = rotated.consents,
            "tenant key rotated; older key versions no longer decrypt"
        );
        Ok(Response::new(pb::RotateTenantKeyResponse {
            key_version: rotated.key_version,
            credentials_rewrapped: rotated.credentials,
            webhook_secrets_rewrapped: rotated.webhook_secrets,
            consents_rewrapped: rotated.consents,
        }))
    }

    async fn create_authorization_link(
        &self,
        request: Request<pb::CreateAuthorizationLinkRequest>,
    ) -> Result<Response<pb::CreateAuthorizationLinkResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let connection = self.authorise(caller, &r.tenant, &r.connection_name)?;
        required("identifier", &r.identifier, MAX_NAME)?;
        let link = self
            .oauth
            .create_link(
                connection,
                &r.tenant,
                &r.identifier,
                r.return_url.as_deref(),
                r.replace_user,
            )
            .await
            .inspect_err(|error| {
                if matches!(error, Error::Unavailable { .. } | Error::Internal(_)) {
                    warn!(%error, "creating an authorization link failed");
                }
            })?;
        let account = self
            .records
            .get(&r.tenant, &r.connection_name, &r.identifier)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::CreateAuthorizationLinkResponse {
            authorization_url: link.url,
            expires_at: Some(timestamp(link.expires_at)),
            account: account.as_ref().map(to_wire),
        }))
    }

    async fn put_credential(
        &self,
        request: Request<pb::PutCredentialRequest>,
    ) -> Result<Response<pb::PutCredentialResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let account = self.put(caller, r).await?;
        Ok(Response::new(pb::PutCredentialResponse {
            account: Some(to_wire(&account)),
        }))
    }

    async fn get_access_token(
        &self,
        request: Request<pb::GetAccessTokenRequest>,
    ) -> Result<Response<pb::GetAccessTokenResponse>, Status> {
        let caller = Caller::of(&request)?;
        let current = self.access_token(caller, request.get_ref()).await?;
        Ok(Response::new(pb::GetAccessTokenResponse {
            expires_at: current.secret.expires_at.map(timestamp),
            credential_version: current.version,
            asana_user_gid: current.account.asana_user_gid,
            account_id: current.account.account_id,
            access_token: current.secret.access_token.expose().to_owned(),
        }))
    }

    async fn report_rejected_token(
        &self,
        request: Request<pb::ReportRejectedTokenRequest>,
    ) -> Result<Response<pb::ReportRejectedTokenResponse>, Status> {
        let caller = Caller::of(&request)?;
        let current = self.rejected_token(caller, request.get_ref()).await?;
        Ok(Response::new(pb::ReportRejectedTokenResponse {
            expires_at: current.secret.expires_at.map(timestamp),
            credential_version: current.version,
            asana_user_gid: current.account.asana_user_gid,
            account_id: current.account.account_id,
            access_token: current.secret.access_token.expose().to_owned(),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let (_, account) = self
            .account(caller, &r.tenant, &r.connection_name, &r.identifier)
            .await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(to_wire(&account)),
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        Ok(Response::new(self.list(caller, r).await?))
    }

    async fn get_identity_status(
        &self,
        request: Request<pb::GetIdentityStatusRequest>,
    ) -> Result<Response<pb::GetIdentityStatusResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        required("tenant", &r.tenant, MAX_NAME)?;
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        required("identifier", &r.identifier, MAX_NAME)?;
        let accounts = self
            .records
            .of_identifier(&r.tenant, &r.identifier)
            .await
            .map_err(Error::from)?;
        let mut connections = Vec::new();
        for connection in self
            .connections
            .iter()
            .filter(|c| caller.check_connection(&c.name).is_ok())
        {
            let wire = connection.to_wire();
            let account = accounts
                .iter()
                .find(|a| a.connection_name == connection.name);
            // An OAuth connection without a working account gets the link that fixes it.
            let needs_consent = connection.auth == Auth::Oauth
                && account.is_none_or(|a| {
                    matches!(
                        a.state,
                        State::Pending | State::NeedsReauth | State::Revoked
                    )
                });
            let link = if needs_consent {
                Some(
                    self.oauth
                        .create_link(connection, &r.tenant, &r.identifier, None, false)
                        .await
                        .inspect_err(|error| {
                            warn!(%error, "creating a reauthorization link failed");
                        })?,
                )
            } else {
                None
            };
            let account = account.map(to_wire);
            connections.push(pb::ConnectionStatus {
                connection_name: connection.name.clone(),
                kind: wire.kind,
                auth_method: wire.auth_method,
                state: account.as_ref().map(|a| a.state),
                account,
                reauthorization_url_expires_at: link.as_ref().map(|l| timestamp(l.expires_at)),
                reauthorization_url: link.map(|l| l.url),
            });
        }
        Ok(Response::new(pb::GetIdentityStatusResponse { connections }))
    }

    async fn disconnect_account(
        &self,
        request: Request<pb::DisconnectAccountRequest>,
    ) -> Result<Response<pb::DisconnectAccountResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let (account, revoked_upstream) = self.disconnect(caller, r).await?;
        Ok(Response::new(pb::DisconnectAccountResponse {
            account: Some(to_wire(&account)),
            revoked_upstream,
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        required("tenant", &r.tenant, MAX_NAME)?;
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        if r.confirm_tenant != r.tenant {
            return Err(Error::InvalidArgument {
                field: "confirm_tenant",
                description: "must repeat the tenant exactly".to_owned(),
            }
            .into());
        }
        crate::audit::ready(&self.audit)?;
        let accounts = self
            .records
            .tenant_accounts(&r.tenant)
            .await
            .map_err(Error::from)?;
        let webhook_secrets = self
            .records
            .webhook_secrets(&r.tenant)
            .await
            .map_err(Error::from)?;
        // Each OAuth grant is revoked at Asana while its refresh token can still be read.
        let grants_revoked_upstream = self.revoke_tenant_upstream(&accounts).await;
        // The key next: once it is gone every copy of the tenant's ciphertext is unreadable.
        let stored: Vec<Location<'_>> = accounts
            .iter()
            .filter(|account| account.state != State::Revoked)
            .map(|account| Location {
                tenant: &account.tenant,
                connection: &account.connection_name,
                identifier: &account.identifier,
            })
            .collect();
        self.secrets
            .delete_tenant(&r.tenant, &stored, &webhook_secrets)
            .await
            .inspect_err(|error| warn!(%error, "tenant deletion failed in vault"))?;
        let accounts_deleted = self
            .records
            .delete_tenant(&r.tenant)
            .await
            .map_err(Error::from)?;
        let mut event = Event::new(
            r.tenant.as_str(),
            crate::audit::SERVICE,
            action::TENANT_DELETED,
            Outcome::Success,
        );
        event.actor.identifier = Some(caller.name().to_owned());
        event
            .details
            .insert("accounts_deleted".into(), accounts_deleted.into());
        event.details.insert(
            "grants_revoked_upstream".into(),
            grants_revoked_upstream.into(),
        );
        self.audit.record(event).await;
        info!(
            accounts_deleted,
            grants_revoked_upstream, "tenant deleted and its encryption key destroyed"
        );
        Ok(Response::new(pb::DeleteTenantResponse {
            accounts_deleted,
            grants_revoked_upstream,
            encryption_key_destroyed: true,
        }))
    }

    async fn get_connection(
        &self,
        request: Request<pb::GetConnectionRequest>,
    ) -> Result<Response<pb::GetConnectionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let name = &request.get_ref().name;
        if name.is_empty() {
            return Err(Error::InvalidArgument {
                field: "name",
                description: "is required".to_owned(),
            }
            .into());
        }
        let connection = self.connection(caller, name)?;
        caller.check_connection(name).map_err(Error::from)?;
        Ok(Response::new(pb::GetConnectionResponse {
            connection: Some(connection.to_wire()),
        }))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let list = request.get_ref();
        let kind = list
            .kind
            .map(|k| match pb::ConnectionKind::try_from(k) {
                Ok(pb::ConnectionKind::Rest) => Ok(Kind::Rest),
                Ok(pb::ConnectionKind::Mcp) => Ok(Kind::Mcp),
                _ => Err(Error::InvalidArgument {
                    field: "kind",
                    description: "must be REST or MCP".to_owned(),
                }),
            })
            .transpose()?;
        let after = match list.page_token.as_str() {
            "" => None,
            token => Some(
                hex::decode(token)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| Error::InvalidArgument {
                        field: "page_token",
                        description: "is not a token this service issued".to_owned(),
                    })?,
            ),
        };
        let size = match list.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // Only what this caller may use, in name order.
        let mut visible = self.connections.iter().filter(|c| {
            caller.check_connection(&c.name).is_ok()
                && kind.is_none_or(|k| c.kind == k)
                && after.as_ref().is_none_or(|a| c.name.as_str() > a.as_str())
        });
        let connections: Vec<pb::Connection> = visible
            .by_ref()
            .take(size)
            .map(Connection::to_wire)
            .collect();
        let next_page_token = match (visible.next(), connections.last()) {
            (Some(_), Some(last)) => hex::encode(&last.name),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListConnectionsResponse {
            connections,
            next_page_token,
        }))
    }
}
