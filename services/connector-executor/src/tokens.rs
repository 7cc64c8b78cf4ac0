//! Access tokens from token-vault, cached per account until they come within the margin of
//! their expiry, with at most one fetch in flight per account.
//!
//! The cache is keyed by (tenant, connection, identifier), so nothing crosses tenants. A
//! token Asana rejects is reported to token-vault (`ReportRejectedToken`), which refreshes it
//! or says the account needs a new consent; a report about a version older than the cached one
//! is answered from the cache, so a burst of 401s on one stale token costs one refresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use asana_client::Token;

use crate::Error;

/// The account a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AccountKey {
    pub tenant: String,
    pub connection: String,
    pub identifier: String,
}

/// A token and what the audit trail needs to know about it.
#[derive(Debug)]
pub(crate) struct AccessToken {
    pub token: Token,
    pub version: u64,
    pub account_id: String,
    pub asana_user_gid: String,
    expires_at: Option<SystemTime>,
}

impl AccessToken {
    fn valid_for(&self, margin: Duration) -> bool {
        self.expires_at.is_none_or(|at| {
            at.duration_since(SystemTime::now())
                .is_ok_and(|left| left > margin)
        })
    }
}

#[derive(Debug, Default)]
struct Slot {
    current: RwLock<Option<Arc<AccessToken>>>,
    /// Held while a fetch is in flight, so there is one per account.
    fetch: tokio::sync::Mutex<()>,
}

impl Slot {
    fn current(&self) -> Option<Arc<AccessToken>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self, token: Option<Arc<AccessToken>>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = token;
    }
}

/// The token cache in front of token-vault.
#[derive(Debug)]
pub(crate) struct Tokens {
    client: TokenVaultClient<AuthenticatedChannel>,
    margin: Duration,
    slots: Mutex<HashMap<AccountKey, Arc<Slot>>>,
}

impl Tokens {
    pub(crate) fn new(client: TokenVaultClient<AuthenticatedChannel>, margin: Duration) -> Self {
        Self {
            client,
            margin,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &AccountKey) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// A token valid for at least the margin.
    pub(crate) async fn get(&self, key: &AccountKey) -> Result<Arc<AccessToken>, Error> {
        let slot = self.slot(key);
        if let Some(token) = slot.current().filter(|t| t.valid_for(self.margin)) {
            return Ok(token);
        }
        let _fetching = slot.fetch.lock().await;
        if let Some(token) = slot.current().filter(|t| t.valid_for(self.margin)) {
            return Ok(token);
        }
        let request = pb::GetAccessTokenRequest {
            tenant: key.tenant.clone(),
            connection_name: key.connection.clone(),
            identifier: key.identifier.clone(),
            min_valid_for: prost_types::Duration::try_from(self.margin * 2).ok(),
        };
        let answer = self.client.clone().get_access_token(request).await;
        settle(&slot, answer.map(|r| AccessToken::from(r.into_inner())))
    }

    /// Asana answered 401 to `rejected`: a token to retry with, from a newer version.
    pub(crate) async fn rejected(
        &self,
        key: &AccountKey,
        rejected: &AccessToken,
        asana_request_id: Option<&str>,
    ) -> Result<Arc<AccessToken>, Error> {
        let slot = self.slot(key);
        let _fetching = slot.fetch.lock().await;
        if let Some(token) = slot.current().filter(|t| t.version > rejected.version) {
            return Ok(token);
        }
        let request = pb::ReportRejectedTokenRequest {
            tenant: key.tenant.clone(),
            connection_name: key.connection.clone(),
            identifier: key.identifier.clone(),
            credential_version: rejected.version,
            asana_request_id: asana_request_id.unwrap_or_default().to_owned(),
        };
        let answer = self.client.clone().report_rejected_token(request).await;
        settle(&slot, answer.map(|r| AccessToken::from(r.into_inner())))
    }
}

/// Caches a successful answer; forgets the account on any refusal, so the next call asks
/// token-vault again rather than reusing a token it no longer stands behind.
fn settle(
    slot: &Slot,
    answer: Result<AccessToken, tonic::Status>,
) -> Result<Arc<AccessToken>, Error> {
    match answer {
        Ok(token) => {
            let token = Arc::new(token);
            slot.store(Some(token.clone()));
            Ok(token)
        }
        Err(status) => {
            slot.store(None);
            Err(Error::from_token_vault(status))
        }
    }
}

/// `GetAccessTokenResponse` and `ReportRejectedTokenResponse` carry the same fields.
macro_rules! access_token_from {
    ($response:ty) => {
        impl From<$response> for AccessToken {
            fn from(r: $response) -> Self {
                Self {
                    token: Token::new(r.access_token),
                    version: r.credential_version,
                    account_id: r.account_id,
                    asana_user_gid: r.asana_user_gid,
                    expires_at: r.expires_at.and_then(|t| SystemTime::try_from(t).ok()),
                }
            }
        }
    };
}

access_token_from!(pb::GetAccessTokenResponse);
access_token_from!(pb::ReportRejectedTokenResponse);
