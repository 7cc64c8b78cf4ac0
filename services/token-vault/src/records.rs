//! Account records (never a secret) on PostgreSQL or SQLite.
//!
//! As in audit-log, one code path serves both backends through sqlx's `Any` driver: every
//! statement is in the SQL they share (`$N` placeholders, `ON CONFLICT … DO UPDATE`), times are
//! microseconds since the epoch, and only the migrations differ per backend.

pub use agentauth_db::Config;
use agentauth_db::{Database, bind};
use chrono::{DateTime, Utc};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AssertSqlSafe, Row as _};

use crate::connections::Auth;

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored account is corrupt: {0}")]
    Corrupt(String),
}

/// An account's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Active,
    Expired,
    NeedsReauth,
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Active => "ACTIVE",
            Self::Expired => "EXPIRED",
            Self::NeedsReauth => "NEEDS_REAUTH",
            Self::Revoked => "REVOKED",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Active,
            Self::Expired,
            Self::NeedsReauth,
            Self::Revoked,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

fn auth_str(auth: Auth) -> &'static str {
    match auth {
        Auth::Oauth => "oauth",
        Auth::Pat => "pat",
        Auth::ServiceAccount => "service_account",
    }
}

fn parse_auth(text: &str) -> Option<Auth> {
    [Auth::Oauth, Auth::Pat, Auth::ServiceAccount]
        .into_iter()
        .find(|a| auth_str(*a) == text)
}

/// One connected account, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account_id: String,
    pub tenant: String,
    pub connection_name: String,
    pub identifier: String,
    pub state: State,
    pub state_reason: String,
    pub auth_method: Auth,
    pub asana_user_gid: String,
    pub asana_user_name: String,
    pub credential_version: u64,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// How many refreshes in a row failed transiently (0 after a success or a new consent).
    pub refresh_failures: u32,
    /// When the last of those failures happened.
    pub refresh_failed_at: Option<DateTime<Utc>>,
}

/// A credential just stored in Vault, to be recorded as the account's ACTIVE one.
#[derive(Debug, Clone)]
pub struct Granted<'a> {
    pub tenant: &'a str,
    pub connection_name: &'a str,
    pub identifier: &'a str,
    pub auth_method: Auth,
    pub asana_user_gid: &'a str,
    pub asana_user_name: &'a str,
    pub credential_version: u64,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: &'a [String],
}

/// A pending OAuth consent: what one authorization link's `state` is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingState {
    /// Hex SHA-256 of the state; the state itself is never stored.
    pub state_sha256: String,
    pub tenant: String,
    pub connection_name: String,
    pub identifier: String,
    /// The PKCE verifier, Transit-encrypted under the tenant's key.
    pub verifier_ciphertext: String,
    pub return_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// Whether the consent may connect another Asana user than the account's current one.
    pub replace_user: bool,
}

/// Which accounts `list` selects, after which account id, and how many.
#[derive(Debug, Clone)]
pub struct Filter<'a> {
    pub tenant: &'a str,
    pub connection_name: Option<&'a str>,
    pub state: Option<State>,
    pub after: Option<&'a str>,
    pub limit: usize,
}

const COLUMNS: &str = "account_id, tenant, connection_name, identifier, state, state_reason, \
    auth_method, asana_user_gid, asana_user_name, credential_version, expires_at_us, scopes, \
    created_at_us, updated_at_us, last_refreshed_at_us, refresh_failures, refresh_failed_at_us";

/// The accounts database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    /// Signalled after each commit that logged a change, so this replica's followers hear of
    /// it at once (other replicas' by polling).
    changed: std::sync::Arc<tokio::sync::Notify>,
}

impl Store {
    /// A pool for `config` that connects on first use.
    pub fn connect_lazy(config: &Config) -> Result<Self, Error> {
        Ok(Self {
            db: Database::connect_lazy(config)?,
            changed: std::sync::Arc::default(),
        })
    }

    /// The database, to migrate and to check.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Records a pending consent.
    pub async fn insert_oauth_state(&self, pending: &PendingState) -> Result<(), Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, pending.state_sha256.clone());
        bind(&mut args, pending.tenant.clone());
        bind(&mut args, pending.connection_name.clone());
        bind(&mut args, pending.identifier.clone());
        bind(&mut args, pending.verifier_ciphertext.clone());
        bind(&mut args, pending.return_url.clone());
        bind(&mut args, Utc::now().timestamp_micros());
        bind(&mut args, pending.expires_at.timestamp_micros());
        bind(&mut args, i64::from(pending.replace_user));
        sqlx::query_with(
            "INSERT INTO oauth_states (state_sha256, tenant, connection_name, identifier, \
             verifier_ciphertext, return_url, created_at_us, expires_at_us, replace_user) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            args,
        )
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Marks the pending consent whose state hashes to `state_sha256` used, and returns it;
    /// `None` when there is none, it expired or it was used before. The mark is one
    /// conditional `UPDATE`, so of two concurrent uses exactly one gets the consent.
    pub async fn take_oauth_state(
        &self,
        state_sha256: &str,
    ) -> Result<Option<PendingState>, Error> {
        let now = Utc::now().timestamp_micros();
        let mut args = AnyArguments::default();
        bind(&mut args, now);
        bind(&mut args, state_sha256.to_owned());
        let marked = sqlx::query_with(
            "UPDATE oauth_states SET used_at_us = $1 \
             WHERE state_sha256 = $2 AND used_at_us IS NULL AND expires_at_us > $1",
            args,
        )
        .execute(self.db.pool())
        .await?;
        if marked.rows_affected() != 1 {
            return Ok(None);
        }
        let mut args = AnyArguments::default();
        bind(&mut args, state_sha256.to_owned());
        let row = sqlx::query_with(
            "SELECT state_sha256, tenant, connection_name, identifier, verifier_ciphertext, \
             return_url, expires_at_us, replace_user FROM oauth_states WHERE state_sha256 = $1",
            args,
        )
        .fetch_one(self.db.pool())
        .await?;
        Ok(Some(PendingState {
            state_sha256: row.try_get("state_sha256")?,
            tenant: row.try_get("tenant")?,
            connection_name: row.try_get("connection_name")?,
            identifier: row.try_get("identifier")?,
            verifier_ciphertext: row.try_get("verifier_ciphertext")?,
            return_url: row.try_get("return_url")?,
            expires_at: time(row.try_get("expires_at_us")?)?,
            replace_user: row.try_get::<i64, _>("replace_user")? != 0,
        }))
    }

    /// Records `granted` as the account's ACTIVE credential (creating the account if needed),
    /// unless the record already names a newer version of a live credential, and logs the
    /// replaced credential. An account reconnected after a disconnect gets a new account id:
    /// its credential versions start again, so nothing about the old credential (a cached
    /// token, an MCP session, an audit row's account and version) can stand for the new one.
    pub async fn grant(&self, granted: &Granted<'_>) -> Result<Account, Error> {
        let now = Utc::now().timestamp_micros();
        let mut args = AnyArguments::default();
        bind(&mut args, uuid::Uuid::now_v7().to_string());
        bind(&mut args, granted.tenant.to_owned());
        bind(&mut args, granted.connection_name.to_owned());
        bind(&mut args, granted.identifier.to_owned());
        bind(&mut args, State::Active.as_str());
        bind(&mut args, auth_str(granted.auth_method));
        bind(&mut args, granted.asana_user_gid.to_owned());
        bind(&mut args, granted.asana_user_name.to_owned());
        bind(&mut args, version_i64(granted.credential_version)?);
        bind(&mut args, granted.expires_at.map(|t| t.timestamp_micros()));
        bind(&mut args, scopes_json(granted.scopes));
        bind(&mut args, now);
        let sql = format!(
            "INSERT INTO accounts ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, '', $6, $7, $8, $9, $10, $11, $12, $12, $12, 0, NULL) \
             ON CONFLICT (tenant, connection_name, identifier) DO UPDATE SET \
             account_id = CASE WHEN accounts.state = 'REVOKED' THEN excluded.account_id \
             ELSE accounts.account_id END, \
             state = excluded.state, state_reason = excluded.state_reason, \
             auth_method = excluded.auth_method, asana_user_gid = excluded.asana_user_gid, \
             asana_user_name = excluded.asana_user_name, \
             credential_version = excluded.credential_version, \
             expires_at_us = excluded.expires_at_us, scopes = excluded.scopes, \
             updated_at_us = excluded.updated_at_us, \
             last_refreshed_at_us = excluded.last_refreshed_at_us, \
             refresh_failures = 0, refresh_failed_at_us = NULL \
             WHERE accounts.credential_version < excluded.credential_version \
             OR accounts.state = 'REVOKED'"
        );
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            log_change(
                &mut tx,
                &NewChange {
                    tenant: granted.tenant,
                    connection_name: granted.connection_name,
                    identifier: granted.identifier,
                    kind: ChangeKind::CredentialReplaced,
                    credential_version: granted.credential_version,
                },
            )
            .await?;
        }
        tx.commit().await?;
        self.changed.notify_one();
        self.get(granted.tenant, granted.connection_name, granted.identifier)
            .await?
            .ok_or_else(|| Error::Corrupt("an account vanished while it was granted".into()))
    }

    /// The account of (tenant, connection, identifier).
    pub async fn get(
        &self,
        tenant: &str,
        connection_name: &str,
        identifier: &str,
    ) -> Result<Option<Account>, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, tenant.to_owned());
        bind(&mut args, connection_name.to_owned());
        bind(&mut args, identifier.to_owned());
        let sql = format!(
            "SELECT {COLUMNS} FROM accounts \
             WHERE tenant = $1 AND connection_name = $2 AND identifier = $3"
        );
        sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_optional(self.db.pool())
            .await?
            .map(|row| account(&row))
            .transpose()
    }

    /// One page of a tenant's accounts in account-id (creation) order.
    pub async fn list(&self, filter: &Filter<'_>) -> Result<Vec<Account>, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, filter.tenant.to_owned());
        let mut sql = format!("SELECT {COLUMNS} FROM accounts WHERE tenant = $1");
        let mut n = 1;
        let mut condition = |sql: &mut String, column: &str, value: String| {
            n += 1;
            sql.push_str(&format!(" AND {column} ${n}"));
            bind(&mut args, value);
        };
        if let Some(connection) = filter.connection_name {
            condition(&mut sql, "connection_name =", connection.to_owned());
        }
        if let Some(state) = filter.state {
            condition(&mut sql, "state =", state.as_str().to_owned());
        }
        if let Some(after) = filter.after {
            condition(&mut sql, "account_id >", after.to_owned());
        }
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        sql.push_str(&format!(" ORDER BY account_id LIMIT {limit}"));
        let rows = sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(account).collect()
    }

    /// Every account of `tenant`, in account-id order.
    pub async fn tenant_accounts(&self, tenant: &str) -> Result<Vec<Account>, Error> {
        self.list(&Filter {
            tenant,
            connection_name: None,
            state: None,
            after: None,
            limit: usize::MAX,
        })
        .await
    }

    /// Every account of one end user in a tenant.
    pub async fn of_identifier(
        &self,
        tenant: &str,
        identifier: &str,
    ) -> Result<Vec<Account>, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, tenant.to_owned());
        bind(&mut args, identifier.to_owned());
        let sql = format!(
            "SELECT {COLUMNS} FROM accounts WHERE tenant = $1 AND identifier = $2 \
             ORDER BY connection_name"
        );
        let rows = sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(account).collect()
    }

    /// Moves an account to `state` (logging a change to REVOKED or NEEDS_REAUTH), and returns
    /// it.
    pub async fn set_state(
        &self,
        account_id: &str,
        state: State,
        reason: &str,
    ) -> Result<Account, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, state.as_str());
        bind(&mut args, reason.to_owned());
        bind(&mut args, Utc::now().timestamp_micros());
        bind(&mut args, account_id.to_owned());
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query_with(
            "UPDATE accounts SET state = $1, state_reason = $2, updated_at_us = $3 \
             WHERE account_id = $4",
            args,
        )
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            log_state_change(&mut tx, account_id, state).await?;
        }
        tx.commit().await?;
        self.changed.notify_one();
        let mut args = AnyArguments::default();
        bind(&mut args, account_id.to_owned());
        let sql = format!("SELECT {COLUMNS} FROM accounts WHERE account_id = $1");
        let row = sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| Error::Corrupt("an account vanished while it changed state".into()))?;
        account(&row)
    }

    /// The account with `account_id`.
    async fn by_id(&self, account_id: &str) -> Result<Account, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, account_id.to_owned());
        let sql = format!("SELECT {COLUMNS} FROM accounts WHERE account_id = $1");
        let row = sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| Error::Corrupt("an account vanished while it changed".into()))?;
        account(&row)
    }

    /// Records a refreshed credential: ACTIVE with `credential_version` and `expires_at`,
    /// unless the record already names a newer version. Returns the account as it now is.
    pub async fn refreshed(
        &self,
        account_id: &str,
        credential_version: u64,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Account, Error> {
        let now = Utc::now().timestamp_micros();
        let mut args = AnyArguments::default();
        bind(&mut args, State::Active.as_str());
        bind(&mut args, version_i64(credential_version)?);
        bind(&mut args, expires_at.map(|t| t.timestamp_micros()));
        bind(&mut args, now);
        bind(&mut args, account_id.to_owned());
        sqlx::query_with(
            "UPDATE accounts SET state = $1, state_reason = '', credential_version = $2, \
             expires_at_us = $3, last_refreshed_at_us = $4, updated_at_us = $4, \
             refresh_failures = 0, refresh_failed_at_us = NULL \
             WHERE account_id = $5 AND credential_version <= $2 AND state <> 'REVOKED'",
            args,
        )
        .execute(self.db.pool())
        .await?;
        self.by_id(account_id).await
    }

    /// Moves an account to `state` only while its record still names `credential_version`
    /// (a newer credential is never marked broken). Returns the account as it now is.
    pub async fn set_state_at(
        &self,
        account_id: &str,
        credential_version: u64,
        state: State,
        reason: &str,
    ) -> Result<Account, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, state.as_str());
        bind(&mut args, reason.to_owned());
        bind(&mut args, Utc::now().timestamp_micros());
        bind(&mut args, account_id.to_owned());
        bind(&mut args, version_i64(credential_version)?);
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query_with(
            "UPDATE accounts SET state = $1, state_reason = $2, updated_at_us = $3 \
             WHERE account_id = $4 AND credential_version = $5 AND state <> 'REVOKED'",
            args,
        )
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            log_state_change(&mut tx, account_id, state).await?;
        }
        tx.commit().await?;
        self.changed.notify_one();
        self.by_id(account_id).await
    }

    /// Records a transient refresh failure of version `credential_version`: EXPIRED with
    /// `reason`, one more failure in a row, now. Returns the account as it now is.
    pub async fn refresh_failed(
        &self,
        account_id: &str,
        credential_version: u64,
        reason: &str,
    ) -> Result<Account, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, State::Expired.as_str());
        bind(&mut args, reason.to_owned());
        bind(&mut args, Utc::now().timestamp_micros());
        bind(&mut args, account_id.to_owned());
        bind(&mut args, version_i64(credential_version)?);
        sqlx::query_with(
            "UPDATE accounts SET state = $1, state_reason = $2, updated_at_us = $3, \
             refresh_failures = refresh_failures + 1, refresh_failed_at_us = $3 \
             WHERE account_id = $4 AND credential_version = $5 AND state <> 'REVOKED'",
            args,
        )
        .execute(self.db.pool())
        .await?;
        self.by_id(account_id).await
    }

    /// Up to `limit` ACTIVE or EXPIRED OAuth accounts (of every tenant) whose credential
    /// expires before `before`, soonest first: what the sweeper refreshes.
    pub async fn expiring(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Account>, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, before.timestamp_micros());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {COLUMNS} FROM accounts WHERE auth_method = 'oauth' \
             AND state IN ('ACTIVE', 'EXPIRED') AND expires_at_us IS NOT NULL \
             AND expires_at_us < $1 ORDER BY expires_at_us LIMIT {limit}"
        );
        let rows = sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(account).collect()
    }

    /// Takes the refresh lease of `account_id` for `owner` until `expires_at`: inserts it, or
    /// takes over a lease that has expired, in one statement. Whether `owner` now holds it.
    pub async fn acquire_lease(
        &self,
        account_id: &str,
        owner: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, account_id.to_owned());
        bind(&mut args, owner.to_owned());
        bind(&mut args, expires_at.timestamp_micros());
        bind(&mut args, Utc::now().timestamp_micros());
        let done = sqlx::query_with(
            "INSERT INTO refresh_leases (account_id, owner, expires_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, \
             expires_at_us = excluded.expires_at_us \
             WHERE refresh_leases.expires_at_us <= $4",
            args,
        )
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether someone holds an unexpired refresh lease of `account_id`.
    pub async fn lease_held(&self, account_id: &str) -> Result<bool, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, account_id.to_owned());
        bind(&mut args, Utc::now().timestamp_micros());
        let row = sqlx::query_with(
            "SELECT owner FROM refresh_leases WHERE account_id = $1 AND expires_at_us > $2",
            args,
        )
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Releases the refresh lease of `account_id` if `owner` still holds it.
    pub async fn release_lease(&self, account_id: &str, owner: &str) -> Result<(), Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, account_id.to_owned());
        bind(&mut args, owner.to_owned());
        sqlx::query_with(
            "DELETE FROM refresh_leases WHERE account_id = $1 AND owner = $2",
            args,
        )
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Deletes every account and pending consent of `tenant`, and logs the deletion; returns
    /// how many accounts there were.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<u64, Error> {
        let mut tx = self.db.pool().begin().await?;
        for table in ["oauth_states", "webhook_secrets"] {
            let mut args = AnyArguments::default();
            bind(&mut args, tenant.to_owned());
            sqlx::query_with(
                AssertSqlSafe(format!("DELETE FROM {table} WHERE tenant = $1")),
                args,
            )
            .execute(&mut *tx)
            .await?;
        }
        let mut args = AnyArguments::default();
        bind(&mut args, tenant.to_owned());
        let done = sqlx::query_with("DELETE FROM accounts WHERE tenant = $1", args)
            .execute(&mut *tx)
            .await?;
        log_change(
            &mut tx,
            &NewChange {
                tenant,
                connection_name: "",
                identifier: "",
                kind: ChangeKind::TenantDeleted,
                credential_version: 0,
            },
        )
        .await?;
        tx.commit().await?;
        self.changed.notify_one();
        Ok(done.rows_affected())
    }

    /// Records that a re-wrap stored `account_id`'s credential as KV version `to` (the same
    /// credential under a newer key version), unless the record already names a newer version
    /// or the account was disconnected. No change is logged: the token itself is unchanged, so
    /// nothing cached goes stale. (A refresh whose write the re-wrap replaced before it was
    /// recorded keeps its old expiry in the record: the sweeper then refreshes it once early.)
    pub async fn rewrapped(&self, account_id: &str, to: u64) -> Result<(), Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, version_i64(to)?);
        bind(&mut args, account_id.to_owned());
        sqlx::query_with(
            "UPDATE accounts SET credential_version = $1 \
             WHERE account_id = $2 AND credential_version < $1 AND state <> 'REVOKED'",
            args,
        )
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Notes that a webhook secret is kept for `subscription_id` of `tenant`.
    pub async fn keep_webhook_secret(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<(), Error> {
        self.webhook_secret_row(
            "INSERT INTO webhook_secrets (tenant, subscription_id) VALUES ($1, $2) \
             ON CONFLICT (tenant, subscription_id) DO NOTHING",
            tenant,
            subscription_id,
        )
        .await
    }

    /// Notes that `subscription_id`'s webhook secret is gone.
    pub async fn forget_webhook_secret(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<(), Error> {
        self.webhook_secret_row(
            "DELETE FROM webhook_secrets WHERE tenant = $1 AND subscription_id = $2",
            tenant,
            subscription_id,
        )
        .await
    }

    /// Runs `sql` on the `webhook_secrets` row of (`tenant`, `subscription_id`).
    async fn webhook_secret_row(
        &self,
        sql: &'static str,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<(), Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, tenant.to_owned());
        bind(&mut args, subscription_id.to_owned());
        sqlx::query_with(sql, args).execute(self.db.pool()).await?;
        Ok(())
    }

    /// The subscriptions of `tenant` whose webhook secret is kept.
    pub async fn webhook_secrets(&self, tenant: &str) -> Result<Vec<String>, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, tenant.to_owned());
        let rows = sqlx::query_with(
            "SELECT subscription_id FROM webhook_secrets WHERE tenant = $1 \
             ORDER BY subscription_id",
            args,
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| row.try_get("subscription_id").map_err(Error::from))
            .collect()
    }

    /// `(state_sha256, verifier_ciphertext)` of every pending consent of `tenant` that can
    /// still be used.
    pub async fn pending_consents(&self, tenant: &str) -> Result<Vec<(String, String)>, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, tenant.to_owned());
        bind(&mut args, Utc::now().timestamp_micros());
        let rows = sqlx::query_with(
            "SELECT state_sha256, verifier_ciphertext FROM oauth_states \
             WHERE tenant = $1 AND used_at_us IS NULL AND expires_at_us > $2",
            args,
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("state_sha256")?,
                    row.try_get("verifier_ciphertext")?,
                ))
            })
            .collect()
    }

    /// Replaces a pending consent's verifier ciphertext `from` by `to` (a re-wrap of it), if
    /// it still holds `from`; whether it did.
    pub async fn rewrap_consent(
        &self,
        state_sha256: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, to.to_owned());
        bind(&mut args, state_sha256.to_owned());
        bind(&mut args, from.to_owned());
        let done = sqlx::query_with(
            "UPDATE oauth_states SET verifier_ciphertext = $1 \
             WHERE state_sha256 = $2 AND verifier_ciphertext = $3",
            args,
        )
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Up to `limit` changes after `after`, in sequence order.
    pub async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Change>, Error> {
        let mut args = AnyArguments::default();
        bind(&mut args, version_i64(after)?);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query_with(
            AssertSqlSafe(format!(
                "SELECT sequence, tenant, connection_name, identifier, kind, \
                 credential_version, changed_at_us FROM account_changes WHERE sequence > $1 \
                 ORDER BY sequence LIMIT {limit}"
            )),
            args,
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(change).collect()
    }

    /// The change log's extent: the oldest sequence it still holds (none when it holds
    /// nothing) and the newest ever assigned.
    pub async fn change_extent(&self) -> Result<(Option<u64>, u64), Error> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(sequence) FROM account_changes), \
             (SELECT sequence FROM account_change_head WHERE id = 1)",
        )
        .fetch_one(self.db.pool())
        .await?;
        let oldest: Option<i64> = row.try_get(0)?;
        let head: i64 = row.try_get(1)?;
        let unsigned =
            |n: i64| u64::try_from(n).map_err(|_| Error::Corrupt(format!("change sequence {n}")));
        Ok((oldest.map(unsigned).transpose()?, unsigned(head)?))
    }

    /// Forgets changes made before `changes_before` and pending consents that expired before
    /// `states_expired_before`; how many of each.
    pub async fn prune(
        &self,
        changes_before: DateTime<Utc>,
        states_expired_before: DateTime<Utc>,
    ) -> Result<(u64, u64), Error> {
        let changes = sqlx::query("DELETE FROM account_changes WHERE changed_at_us < $1")
            .bind(changes_before.timestamp_micros())
            .execute(self.db.pool())
            .await?
            .rows_affected();
        let states = sqlx::query("DELETE FROM oauth_states WHERE expires_at_us < $1")
            .bind(states_expired_before.timestamp_micros())
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok((changes, states))
    }

    /// Resolves once a change has been committed through this store since it last resolved
    /// (for the one task that follows the log on this replica).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// What happened to an account, as the change log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    CredentialReplaced,
    NeedsReauth,
    Revoked,
    TenantDeleted,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::CredentialReplaced => "credential_replaced",
            Self::NeedsReauth => "needs_reauth",
            Self::Revoked => "revoked",
            Self::TenantDeleted => "tenant_deleted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::CredentialReplaced,
            Self::NeedsReauth,
            Self::Revoked,
            Self::TenantDeleted,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub sequence: u64,
    pub tenant: String,
    /// Empty for a tenant's deletion, as is `identifier`.
    pub connection_name: String,
    pub identifier: String,
    pub kind: ChangeKind,
    pub credential_version: u64,
    pub changed_at: DateTime<Utc>,
}

/// A change about to be logged.
struct NewChange<'a> {
    tenant: &'a str,
    connection_name: &'a str,
    identifier: &'a str,
    kind: ChangeKind,
    credential_version: u64,
}

/// Appends `change` to the log inside `tx`: the head row's lock, held until `tx` ends,
/// orders every writer, so sequences commit in order and without gaps.
async fn log_change(
    tx: &mut sqlx::Transaction<'_, Any>,
    change: &NewChange<'_>,
) -> Result<(), Error> {
    let row = sqlx::query(
        "UPDATE account_change_head SET sequence = sequence + 1 WHERE id = 1 RETURNING sequence",
    )
    .fetch_one(&mut **tx)
    .await?;
    let sequence: i64 = row.try_get(0)?;
    let mut args = AnyArguments::default();
    bind(&mut args, sequence);
    bind(&mut args, change.tenant.to_owned());
    bind(&mut args, change.connection_name.to_owned());
    bind(&mut args, change.identifier.to_owned());
    bind(&mut args, change.kind.as_str());
    bind(&mut args, version_i64(change.credential_version)?);
    bind(&mut args, Utc::now().timestamp_micros());
    sqlx::query_with(
        "INSERT INTO account_changes (sequence, tenant, connection_name, identifier, kind, \
         credential_version, changed_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Logs an account's move to REVOKED or NEEDS_REAUTH (other states make nothing stale).
async fn log_state_change(
    tx: &mut sqlx::Transaction<'_, Any>,
    account_id: &str,
    state: State,
) -> Result<(), Error> {
    let kind = match state {
        State::Revoked => ChangeKind::Revoked,
        State::NeedsReauth => ChangeKind::NeedsReauth,
        State::Pending | State::Active | State::Expired => return Ok(()),
    };
    let mut args = AnyArguments::default();
    bind(&mut args, account_id.to_owned());
    let row = sqlx::query_with(
        "SELECT tenant, connection_name, identifier FROM accounts WHERE account_id = $1",
        args,
    )
    .fetch_one(&mut **tx)
    .await?;
    let (tenant, connection_name, identifier): (String, String, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    log_change(
        tx,
        &NewChange {
            tenant: &tenant,
            connection_name: &connection_name,
            identifier: &identifier,
            kind,
            credential_version: 0,
        },
    )
    .await
}

fn change(row: &AnyRow) -> Result<Change, Error> {
    let kind: String = row.try_get("kind")?;
    let unsigned = |column: &str| -> Result<u64, Error> {
        let n: i64 = row.try_get(column)?;
        u64::try_from(n).map_err(|_| Error::Corrupt(format!("{column} {n}")))
    };
    Ok(Change {
        sequence: unsigned("sequence")?,
        tenant: row.try_get("tenant")?,
        connection_name: row.try_get("connection_name")?,
        identifier: row.try_get("identifier")?,
        kind: ChangeKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("change {kind}")))?,
        credential_version: unsigned("credential_version")?,
        changed_at: time(row.try_get("changed_at_us")?)?,
    })
}

fn version_i64(version: u64) -> Result<i64, Error> {
    i64::try_from(version).map_err(|_| Error::Corrupt("credential version out of range".into()))
}

fn scopes_json(scopes: &[String]) -> String {
    serde_json::Value::from(scopes.to_vec()).to_string()
}

fn time(us: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| Error::Corrupt(format!("time {us}")))
}

fn account(row: &AnyRow) -> Result<Account, Error> {
    let text = |column: &str| row.try_get::<String, _>(column);
    let state = text("state")?;
    let auth = text("auth_method")?;
    let version: i64 = row.try_get("credential_version")?;
    let optional_time = |column: &str| -> Result<Option<DateTime<Utc>>, Error> {
        row.try_get::<Option<i64>, _>(column)?.map(time).transpose()
    };
    Ok(Account {
        account_id: text("account_id")?,
        tenant: text("tenant")?,
        connection_name: text("connection_name")?,
        identifier: text("identifier")?,
        state: State::parse(&state).ok_or_else(|| Error::Corrupt(format!("state {state}")))?,
        state_reason: text("state_reason")?,
        auth_method: parse_auth(&auth)
            .ok_or_else(|| Error::Corrupt(format!("auth_method {auth}")))?,
        asana_user_gid: text("asana_user_gid")?,
        asana_user_name: text("asana_user_name")?,
        credential_version: u64::try_from(version)
            .map_err(|_| Error::Corrupt(format!("credential_version {version}")))?,
        expires_at: optional_time("expires_at_us")?,
        scopes: serde_json::from_str(&text("scopes")?)
            .map_err(|e| Error::Corrupt(format!("scopes: {e}")))?,
        created_at: time(row.try_get("created_at_us")?)?,
        updated_at: time(row.try_get("updated_at_us")?)?,
        last_refreshed_at: optional_time("last_refreshed_at_us")?,
        refresh_failures: u32::try_from(row.try_get::<i64, _>("refresh_failures")?)
            .map_err(|_| Error::Corrupt("refresh_failures out of range".into()))?,
        refresh_failed_at: optional_time("refresh_failed_at_us")?,
    })
}
