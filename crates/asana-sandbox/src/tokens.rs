//! Every credential the sandbox accepts: personal access tokens, service-account tokens, and
//! OAuth grants of REST apps and MCP apps, whose tokens work only on their own surface.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Which of Asana's two front doors a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The REST API under `/api/1.0`.
    Rest,
    /// The MCP V2 server at `/v2/mcp`.
    Mcp,
}

/// Which surface an OAuth app's tokens are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    Rest,
    Mcp,
}

/// A registered OAuth app.
#[derive(Debug, Clone)]
pub struct App {
    pub client_id: String,
    pub client_secret: String,
    pub name: String,
    pub kind: AppKind,
    /// Exact redirect URIs; a request must match one byte for byte.
    pub redirect_uris: Vec<String>,
}

/// What kind of credential authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    Pat,
    ServiceAccount,
    OAuth { client_id: String, kind: AppKind },
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub struct Principal {
    /// A stable, non-secret key for the token (its SHA-256), for limits and stats.
    pub token_key: String,
    pub user_gid: String,
    pub credential: CredentialKind,
    pub scopes: Vec<String>,
}

/// One user's authorization of one app: a refresh token and the access tokens it minted.
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: u64,
    pub client_id: String,
    pub user_gid: String,
    pub scopes: Vec<String>,
    pub refresh_token: String,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
struct Access {
    grant: u64,
    expires_at: DateTime<Utc>,
}

/// What `/-/oauth_revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    /// Asana answers 200 for an unknown token too ("deauthorized or not found").
    Unknown,
    /// An access token was sent; Asana answers 400.
    NotARefreshToken,
}

/// What a token endpoint hands back.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    /// Present on a code exchange, and on a refresh when rotation is on.
    pub refresh_token: Option<String>,
    pub user_gid: String,
}

/// An authorization code waiting for its exchange at `/-/oauth_token`, with everything the
/// exchange must match.
#[derive(Debug, Clone)]
pub struct PendingCode {
    pub client_id: String,
    /// The redirect URI the authorization used; the exchange must repeat it exactly.
    pub redirect_uri: String,
    /// The PKCE S256 challenge the exchange's `code_verifier` must answer.
    pub code_challenge: String,
    /// The user who consented.
    pub user_gid: String,
    pub scopes: Vec<String>,
    /// The RFC 8707 resource an MCP app asked for.
    pub resource: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// The registry of every credential.
#[derive(Debug)]
pub struct Tokens {
    pats: HashMap<String, (String, bool)>,
    pub(crate) apps: HashMap<String, App>,
    pub(crate) grants: HashMap<u64, Grant>,
    refresh_index: HashMap<String, u64>,
    access: HashMap<String, Access>,
    next_grant: u64,
    /// Authorization codes not yet exchanged, by code.
    pub(crate) codes: HashMap<String, PendingCode>,
    /// How long an access token lives.
    pub lifetime: Duration,
    /// Whether a refresh also replaces the refresh token (the old one stops working).
    pub rotation: bool,
}

/// A fresh random token with a recognisable prefix.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .unwrap_or_else(|e| panic!("the operating system's random generator failed: {e}"));
    format!("{prefix}{}", hex::encode(bytes))
}

/// The non-secret key a token is counted under.
pub fn token_key(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..12])
}

impl Tokens {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            pats: HashMap::new(),
            apps: HashMap::new(),
            grants: HashMap::new(),
            refresh_index: HashMap::new(),
            access: HashMap::new(),
            next_grant: 0,
            codes: HashMap::new(),
            lifetime,
            rotation: false,
        }
    }

    /// A new personal access token (or service-account token) for `user_gid`.
    pub fn add_pat(&mut self, user_gid: &str, service_account: bool) -> String {
        let token = random_token(&format!("2/{user_gid}/sbx:"));
        self.pats
            .insert(token.clone(), (user_gid.to_owned(), service_account));
        token
    }

    /// Adds a known PAT (for seeds and tests that want a fixed value).
    pub fn add_fixed_pat(&mut self, token: &str, user_gid: &str, service_account: bool) {
        self.pats
            .insert(token.to_owned(), (user_gid.to_owned(), service_account));
    }

    pub fn register_app(&mut self, app: App) {
        self.apps.insert(app.client_id.clone(), app);
    }

    /// Authorizes `user_gid` for `client_id` with `scopes`; returns the grant's tokens.
    pub fn grant(&mut self, client_id: &str, user_gid: &str, scopes: Vec<String>) -> Issued {
        self.next_grant += 1;
        let id = self.next_grant;
        let refresh_token = random_token(&format!("1/{user_gid}:"));
        self.refresh_index.insert(refresh_token.clone(), id);
        self.grants.insert(
            id,
            Grant {
                id,
                client_id: client_id.to_owned(),
                user_gid: user_gid.to_owned(),
                scopes,
                refresh_token: refresh_token.clone(),
                revoked: false,
            },
        );
        let mut issued = self.mint(id);
        issued.refresh_token = Some(refresh_token);
        issued
    }

    fn mint(&mut self, grant: u64) -> Issued {
        let access_token = random_token("sbx_at_");
        let expires_at = Utc::now() + self.lifetime;
        self.access
            .insert(access_token.clone(), Access { grant, expires_at });
        Issued {
            access_token,
            expires_in: self.lifetime.as_secs(),
            refresh_token: None,
            user_gid: self
                .grants
                .get(&grant)
                .map(|g| g.user_gid.clone())
                .unwrap_or_default(),
        }
    }

    /// The grant behind a live refresh token of `client_id`.
    pub fn grant_for_refresh(&self, client_id: &str, refresh_token: &str) -> Option<&Grant> {
        self.refresh_index
            .get(refresh_token)
            .and_then(|id| self.grants.get(id))
            .filter(|g| !g.revoked && g.client_id == client_id)
    }

    /// A new access token from a refresh token (`None` means `invalid_grant`).
    pub fn refresh(&mut self, client_id: &str, refresh_token: &str) -> Option<Issued> {
        let id = self.grant_for_refresh(client_id, refresh_token)?.id;
        let mut issued = self.mint(id);
        if self.rotation {
            let user = issued.user_gid.clone();
            let rotated = random_token(&format!("1/{user}:"));
            self.refresh_index.remove(refresh_token);
            self.refresh_index.insert(rotated.clone(), id);
            if let Some(grant) = self.grants.get_mut(&id) {
                grant.refresh_token = rotated.clone();
            }
            issued.refresh_token = Some(rotated);
        }
        Some(issued)
    }

    /// Revokes the grant of `refresh_token` and every access token it minted.
    pub fn revoke(&mut self, refresh_token: &str) -> Revocation {
        if self.access.contains_key(refresh_token) {
            return Revocation::NotARefreshToken;
        }
        match self.refresh_index.get(refresh_token).copied() {
            Some(id) => {
                self.revoke_grant(id);
                Revocation::Revoked
            }
            None => Revocation::Unknown,
        }
    }

    /// Revokes a grant by id (for the control API too).
    pub fn revoke_grant(&mut self, id: u64) {
        if let Some(grant) = self.grants.get_mut(&id) {
            grant.revoked = true;
        }
        self.access.retain(|_, a| a.grant != id);
    }

    /// Makes every access token of a grant expired now (the control API's "expire").
    pub fn expire_grant(&mut self, id: u64) {
        let past = Utc::now() - chrono::TimeDelta::seconds(1);
        for access in self.access.values_mut().filter(|a| a.grant == id) {
            access.expires_at = past;
        }
    }

    /// Stores `pending` under a new random code and returns the code; forgets expired codes.
    pub fn issue_code(&mut self, pending: PendingCode) -> String {
        let now = Utc::now();
        self.codes.retain(|_, c| c.expires_at > now);
        let code = random_token("sbx_ac_");
        self.codes.insert(code.clone(), pending);
        code
    }

    /// Removes `code` (a code is good for one attempt) and returns it unless it expired.
    pub fn take_code(&mut self, code: &str) -> Option<PendingCode> {
        self.codes
            .remove(code)
            .filter(|c| c.expires_at > Utc::now())
    }

    /// Who `token` is, on `surface`.
    pub fn authenticate(&self, token: &str, surface: Surface) -> Result<Principal, ApiError> {
        if let Some((user_gid, service_account)) = self.pats.get(token) {
            if surface == Surface::Mcp {
                return Err(ApiError::unauthorized());
            }
            return Ok(Principal {
                token_key: token_key(token),
                user_gid: user_gid.clone(),
                credential: if *service_account {
                    CredentialKind::ServiceAccount
                } else {
                    CredentialKind::Pat
                },
                scopes: vec!["default".into()],
            });
        }
        let access = self.access.get(token).ok_or_else(ApiError::unauthorized)?;
        let grant = self
            .grants
            .get(&access.grant)
            .filter(|g| !g.revoked)
            .ok_or_else(ApiError::unauthorized)?;
        let app = self
            .apps
            .get(&grant.client_id)
            .ok_or_else(ApiError::unauthorized)?;
        let matches = matches!(
            (app.kind, surface),
            (AppKind::Rest, Surface::Rest) | (AppKind::Mcp, Surface::Mcp)
        );
        if !matches {
            return Err(ApiError::unauthorized());
        }
        if access.expires_at <= Utc::now() {
            return Err(ApiError::expired());
        }
        Ok(Principal {
            token_key: token_key(token),
            user_gid: grant.user_gid.clone(),
            credential: CredentialKind::OAuth {
                client_id: grant.client_id.clone(),
                kind: app.kind,
            },
            scopes: grant.scopes.clone(),
        })
    }

    /// What `/-/token_info` reports for any token.
    pub fn info(&self, token: &str) -> serde_json::Value {
        use serde_json::json;
        if self.pats.contains_key(token) {
            return json!({"token_type": "bearer", "active": true, "scope": "default"});
        }
        if let Some(access) = self.access.get(token) {
            let grant = self.grants.get(&access.grant);
            let live = grant.is_some_and(|g| !g.revoked) && access.expires_at > Utc::now();
            let remaining = (access.expires_at - Utc::now()).num_seconds().max(0);
            return json!({
                "token_type": "bearer",
                "active": live,
                "expires_in": remaining,
                "exp": access.expires_at.timestamp(),
                "scope": grant.map(|g| g.scopes.join(" ")).unwrap_or_default(),
                "client_id": grant.map(|g| g.client_id.clone()),
            });
        }
        if let Some(grant) = self
            .refresh_index
            .get(token)
            .and_then(|id| self.grants.get(id))
        {
            return json!({
                "token_type": "refresh",
                "active": !grant.revoked,
                "scope": grant.scopes.join(" "),
                "client_id": grant.client_id,
            });
        }
        json!({"active": false})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let mut tokens = Tokens::new(Duration::from_secs(3600));
        for (id, kind) in [("rest-app", AppKind::Rest), ("mcp-app", AppKind::Mcp)] {
            tokens.register_app(App {
                client_id: id.into(),
                client_secret: "s".into(),
                name: id.into(),
                kind,
                redirect_uris: vec!["http://localhost/cb".into()],
            });
        }
        tokens
    }

    #[test]
    fn tokens_work_only_on_their_own_surface() {
        let mut t = tokens();
        let rest = t.grant("rest-app", "u1", vec!["default".into()]);
        let mcp = t.grant("mcp-app", "u1", vec!["default".into()]);
        let pat = t.add_pat("u1", false);
        assert!(t.authenticate(&rest.access_token, Surface::Rest).is_ok());
        assert!(t.authenticate(&rest.access_token, Surface::Mcp).is_err());
        assert!(t.authenticate(&mcp.access_token, Surface::Mcp).is_ok());
        assert!(t.authenticate(&mcp.access_token, Surface::Rest).is_err());
        assert!(t.authenticate(&pat, Surface::Rest).is_ok());
        assert!(t.authenticate(&pat, Surface::Mcp).is_err());
    }

    #[test]
    fn expiry_revocation_and_rotation() {
        let mut t = tokens();
        let issued = t.grant("rest-app", "u1", vec![]);
        let refresh = issued.refresh_token.clone().unwrap_or_default();
        t.expire_grant(1);
        let error = t
            .authenticate(&issued.access_token, Surface::Rest)
            .expect_err("expired");
        assert_eq!(error.message, crate::error::EXPIRED);
        let renewed = t.refresh("rest-app", &refresh).expect("refresh works");
        assert!(renewed.refresh_token.is_none());
        assert!(
            t.refresh("mcp-app", &refresh).is_none(),
            "another app's refresh token"
        );
        t.rotation = true;
        let rotated = t.refresh("rest-app", &refresh).expect("rotates");
        assert!(
            t.refresh("rest-app", &refresh).is_none(),
            "the old refresh token is dead"
        );
        let new_refresh = rotated.refresh_token.unwrap_or_default();
        assert_eq!(
            t.revoke(&rotated.access_token),
            Revocation::NotARefreshToken
        );
        assert_eq!(t.revoke(&new_refresh), Revocation::Revoked);
        assert!(
            t.authenticate(&rotated.access_token, Surface::Rest)
                .is_err()
        );
        assert!(t.refresh("rest-app", &new_refresh).is_none());
    }
}
