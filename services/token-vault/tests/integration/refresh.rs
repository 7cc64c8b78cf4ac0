//! GetAccessToken and ReportRejectedToken: refresh before expiry, one refresh per account
//! across replicas (the refresh storm), revocation leading to NEEDS_REAUTH with a link, and
//! who may ask. token-vault runs in-process (one or three instances sharing OpenBao and one
//! database) against an in-process Asana sandbox.

use std::sync::Arc;
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_proto::vault::v1 as pb;
use agentauth_testkit::logs::{assert_logs_hold_none_of, logs};
use token_vault::secrets::Location;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::support::{ALICE, Setup, TENANT};

/// One token-vault (or `replicas`) with the sweeper out of the way, logs captured.
async fn start(backend: &str, replicas: usize) -> Setup {
    logs();
    Setup::start(backend, replicas, true).await
}

/// Like `start`, with the sweeper running every `sweep_interval`.
async fn start_sweeping(backend: &str, replicas: usize, sweep_interval: &str) -> Setup {
    logs();
    Setup::start_sweeping(backend, replicas, true, sweep_interval).await
}

/// What these tests ask of the shared setup besides what it offers.
impl Setup {
    async fn get_token(
        &self,
        replica: usize,
        key: &ApiKey,
        min_valid_for: Option<Duration>,
    ) -> Result<pb::GetAccessTokenResponse, tonic::Status> {
        self.client(replica, key)
            .get_access_token(pb::GetAccessTokenRequest {
                tenant: TENANT.into(),
                connection_name: "asana".into(),
                identifier: ALICE.into(),
                min_valid_for: min_valid_for.map(|d| d.try_into().expect("duration")),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The stored (access token, refresh token) of alice.
    async fn stored(&self) -> (String, String) {
        self.stored_of(ALICE).await
    }

    /// The stored (access token, refresh token) of `identifier`.
    async fn stored_of(&self, identifier: &str) -> (String, String) {
        let (secret, _) = self
            .secrets()
            .read(Location {
                tenant: TENANT,
                connection: "asana",
                identifier,
            })
            .await
            .expect("vault answers")
            .expect("a stored secret");
        (
            secret.access_token.expose().to_owned(),
            secret
                .refresh_token
                .map(|t| t.expose().to_owned())
                .unwrap_or_default(),
        )
    }

    /// The sandbox token endpoint's answer to a refresh with `refresh_token`: (status, error).
    async fn try_refresh(&self, refresh_token: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(format!("{}/-/oauth_token", self.sandbox_url))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "test-rest-app"),
                ("client_secret", self.client_secret.as_str()),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .expect("sandbox answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Waits (up to 20s) until the sandbox has served `n` refreshes.
    async fn wait_for_refreshes(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.refreshes() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} refreshes, not {n}",
                self.refreshes()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `token` works on the sandbox's REST API.
    /// The sandbox's token endpoint answers the next request 503.
    fn fail_token_endpoint_once(&self) {
        self.sandbox
            .0
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(asana_sandbox::Fault {
                path_prefix: "/-/oauth_token".into(),
                latency_ms: 0,
                status: Some(503),
                times: Some(1),
            });
    }

    /// Revokes the grant of `refresh_token` at the sandbox, as a user deauthorizing the app.
    async fn revoke_at_asana(&self, refresh_token: &str) {
        let revoked = reqwest::Client::new()
            .post(format!("{}/-/oauth_revoke", self.sandbox_url))
            .form(&[
                ("client_id", "test-rest-app"),
                ("client_secret", self.client_secret.as_str()),
                ("token", refresh_token),
            ])
            .send()
            .await
            .expect("sandbox answers");
        assert!(revoked.status().is_success(), "{}", revoked.status());
    }

    async fn works(&self, token: &str) -> bool {
        reqwest::Client::new()
            .get(format!("{}/api/1.0/users/me", self.sandbox_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("sandbox answers")
            .status()
            .is_success()
    }
}

#[tokio::test]
async fn a_fresh_token_is_returned_and_a_near_expiry_one_is_refreshed_once() {
    let setup = start("sqlite", 1).await;
    setup.connect_alice().await;
    let (stored, refresh_token) = setup.stored().await;

    let fresh = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect("a token");
    assert_eq!(fresh.access_token, stored, "the stored token, unrefreshed");
    assert_eq!(setup.refreshes(), 0);
    let account = setup.account("asana").await;
    assert_eq!(fresh.account_id, account.account_id);
    assert_eq!(fresh.credential_version, account.credential_version);
    assert!(!fresh.asana_user_gid.is_empty());
    assert!(fresh.expires_at.is_some());

    // Asking for more than the remaining hour forces one refresh.
    let refreshed = setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect("a refreshed token");
    assert_eq!(setup.refreshes(), 1);
    assert_ne!(refreshed.access_token, fresh.access_token);
    assert!(refreshed.credential_version > fresh.credential_version);
    assert!(setup.works(&refreshed.access_token).await);
    let account = setup.account("asana").await;
    assert_eq!(account.state, pb::AccountState::Active as i32);
    assert_eq!(account.credential_version, refreshed.credential_version);
    assert!(account.last_refreshed_at.is_some());
    let (_, kept) = setup.stored().await;
    assert_eq!(
        kept, refresh_token,
        "no rotation: the refresh token is kept"
    );

    // The refreshed token is now served as is.
    let again = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect("a token");
    assert_eq!(again.access_token, refreshed.access_token);
    assert_eq!(setup.refreshes(), 1);

    // A rejected stale version returns the current one without a refresh.
    let current = setup
        .client(0, &setup.reader)
        .report_rejected_token(pb::ReportRejectedTokenRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            credential_version: fresh.credential_version,
            asana_request_id: String::new(),
        })
        .await
        .expect("the current token")
        .into_inner();
    assert_eq!(current.access_token, refreshed.access_token);
    assert_eq!(current.credential_version, refreshed.credential_version);
    assert_eq!(setup.refreshes(), 1);

    // A rejected current version is refreshed once.
    let renewed = setup
        .client(0, &setup.reader)
        .report_rejected_token(pb::ReportRejectedTokenRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            credential_version: refreshed.credential_version,
            asana_request_id: String::new(),
        })
        .await
        .expect("a new token")
        .into_inner();
    assert!(renewed.credential_version > refreshed.credential_version);
    assert_ne!(renewed.access_token, refreshed.access_token);
    assert_eq!(setup.refreshes(), 2);
    assert!(setup.works(&renewed.access_token).await);

    assert_logs_hold_none_of(&[
        fresh.access_token,
        refreshed.access_token,
        renewed.access_token,
        refresh_token,
        setup.client_secret.clone(),
    ]);
}

#[tokio::test]
async fn only_operators_disconnect_accounts_and_delete_tenants() {
    let setup = start("sqlite", 1).await;
    setup.connect_alice().await;
    let disconnect = setup
        .client(0, &setup.agent)
        .disconnect_account(pb::DisconnectAccountRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            reason: String::new(),
        })
        .await
        .expect_err("onboarding does not include DisconnectAccount");
    assert_eq!(disconnect.code(), Code::PermissionDenied);
    assert_eq!(
        disconnect
            .get_details_error_info()
            .expect("ErrorInfo")
            .reason,
        "RPC_NOT_ALLOWED"
    );
    for key in [&setup.agent, &setup.reader] {
        let delete = setup
            .client(0, key)
            .delete_tenant(pb::DeleteTenantRequest {
                tenant: TENANT.into(),
                confirm_tenant: TENANT.into(),
            })
            .await
            .expect_err("only operators delete tenants");
        assert_eq!(delete.code(), Code::PermissionDenied);
    }
    assert_eq!(
        setup.account("asana").await.state,
        pb::AccountState::Active as i32,
        "nothing was changed"
    );
}

#[tokio::test]
async fn only_token_readers_get_tokens() {
    let setup = start("sqlite", 1).await;
    setup.connect_alice().await;
    let denied = setup
        .get_token(0, &setup.agent, None)
        .await
        .expect_err("not a token reader");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = setup
        .client(0, &setup.agent)
        .report_rejected_token(pb::ReportRejectedTokenRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            credential_version: 1,
            asana_request_id: String::new(),
        })
        .await
        .expect_err("not a token reader");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(setup.refreshes(), 0);
}

#[tokio::test]
async fn revocation_at_asana_leads_to_needs_reauth_with_a_link() {
    let setup = start("sqlite", 1).await;
    setup.connect_alice().await;
    let (access_token, refresh_token) = setup.stored().await;
    setup.revoke_at_asana(&refresh_token).await;
    assert!(!setup.works(&access_token).await);

    let status = setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect_err("the grant is gone");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "AUTH_REQUIRED");
    assert_eq!(info.domain, "agentauth");
    let help = status.get_details_help().expect("Help");
    assert!(
        help.links
            .first()
            .is_some_and(|l| l.url.starts_with(&setup.sandbox_url) && l.url.contains("state=")),
        "a fresh authorization link"
    );
    assert_eq!(
        setup.account("asana").await.state,
        pb::AccountState::NeedsReauth as i32
    );

    // From now on the answer is the same, at once and without going upstream.
    let before = setup.refreshes();
    let again = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect_err("still needs a consent");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(setup.refreshes(), before);

    // A new consent restores ACTIVE.
    setup.connect_alice().await;
    assert_eq!(
        setup.account("asana").await.state,
        pb::AccountState::Active as i32
    );
    let token = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect("a token");
    assert!(setup.works(&token.access_token).await);
    assert_logs_hold_none_of(&[access_token, refresh_token, token.access_token]);
}

#[tokio::test]
async fn a_transient_failure_leaves_the_account_expired_and_is_retried() {
    let setup = start("sqlite", 1).await;
    setup.connect_alice().await;
    setup.fail_token_endpoint_once();
    let status = setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect_err("the token endpoint is down");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_details_retry_info().is_some(), "RetryInfo");
    assert_eq!(
        setup.account("asana").await.state,
        pb::AccountState::Expired as i32
    );

    let token = setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect("the retry refreshes");
    assert_eq!(setup.refreshes(), 1);
    assert!(setup.works(&token.access_token).await);
    assert_eq!(
        setup.account("asana").await.state,
        pb::AccountState::Active as i32
    );
    assert_logs_hold_none_of(&[token.access_token]);
}

/// 200 concurrent GetAccessToken calls spread over three replicas for one account that needs
/// a refresh: exactly one refresh at the sandbox, and everyone gets the same new token.
async fn refresh_storm(rotation: bool) {
    let setup = start("postgres", 3).await;
    // The first token lives one minute: within the five-minute margin, so it needs a refresh.
    setup.sandbox.tokens().lifetime = Duration::from_secs(60);
    setup.sandbox.tokens().rotation = rotation;
    setup.connect_alice().await;
    setup.sandbox.tokens().lifetime = Duration::from_secs(3600);
    let (old_access, old_refresh) = setup.stored().await;
    assert_eq!(setup.refreshes(), 0);

    let setup = Arc::new(setup);
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let setup = setup.clone();
            tokio::spawn(async move { setup.get_token(i % 3, &setup.reader, None).await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    let mut versions = std::collections::HashSet::new();
    for call in calls {
        let token = call.await.expect("joined").expect("a token");
        versions.insert(token.credential_version);
        tokens.insert(token.access_token);
    }
    assert_eq!(setup.refreshes(), 1, "exactly one refresh upstream");
    assert_eq!(tokens.len(), 1, "everyone got the same token");
    assert_eq!(versions.len(), 1);
    let token = tokens.into_iter().next().expect("a token");
    assert_ne!(token, old_access);
    assert!(setup.works(&token).await);
    let (stored_access, stored_refresh) = setup.stored().await;
    assert_eq!(stored_access, token);
    if rotation {
        assert_ne!(
            stored_refresh, old_refresh,
            "the rotated refresh token is stored"
        );
    } else {
        assert_eq!(stored_refresh, old_refresh, "the refresh token is kept");
    }
    // The stored refresh token still works (a later refresh succeeds).
    let forced = setup
        .get_token(1, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect("refreshed again");
    assert_eq!(setup.refreshes(), 2);
    assert!(setup.works(&forced.access_token).await);
    assert_logs_hold_none_of(&[
        old_access,
        old_refresh,
        token,
        stored_refresh,
        forced.access_token,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_storm_over_three_replicas_refreshes_once() {
    refresh_storm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_storm_with_rotation_refreshes_once() {
    refresh_storm(true).await;
}

/// An account expiring within the margin is refreshed by the sweeper alone, once, even with
/// `replicas` instances sweeping the same database.
async fn sweeper_refreshes_before_expiry(backend: &str, replicas: usize) {
    let setup = start_sweeping(backend, replicas, "100ms").await;
    // The first token lives one minute: within the five-minute margin.
    setup.sandbox.tokens().lifetime = Duration::from_secs(60);
    setup.connect_alice().await;
    setup.sandbox.tokens().lifetime = Duration::from_secs(3600);
    let before = setup.account("asana").await;
    let (old_access, refresh_token) = setup.stored().await;

    setup.wait_for_refreshes(1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = setup.account("asana").await;
        if after.credential_version > before.credential_version {
            break after;
        }
        assert!(tokio::time::Instant::now() < deadline, "the version bumps");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after.state, pb::AccountState::Active as i32);
    assert!(after.last_refreshed_at.is_some());
    let (new_access, _) = setup.stored().await;
    assert_ne!(new_access, old_access);
    assert!(setup.works(&new_access).await);

    // Several more sweeps: the new token is far from expiry, so nothing more happens.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(setup.refreshes(), 1, "exactly one refresh upstream");
    assert_eq!(
        setup.account("asana").await.credential_version,
        after.credential_version
    );
    assert_logs_hold_none_of(&[old_access, new_access, refresh_token]);
}

#[tokio::test]
async fn the_sweeper_refreshes_an_expiring_token_without_being_asked() {
    sweeper_refreshes_before_expiry("sqlite", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sweeping_replicas_refresh_once() {
    sweeper_refreshes_before_expiry("postgres", 2).await;
}

#[tokio::test]
async fn the_sweeper_backs_off_after_a_transient_failure() {
    let setup = start_sweeping("sqlite", 1, "100ms").await;
    setup.sandbox.tokens().lifetime = Duration::from_secs(60);
    setup.connect_alice().await;
    setup.sandbox.tokens().lifetime = Duration::from_secs(3600);
    setup.fail_token_endpoint_once();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while setup.account("asana").await.state != pb::AccountState::Expired as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep fails once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Many sweeps later the account is still waiting out its backoff.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(setup.refreshes(), 0);
    assert_eq!(
        setup.account("asana").await.state,
        pb::AccountState::Expired as i32
    );
    // A caller is not held to the sweeper's backoff.
    let token = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect("refreshed on demand");
    assert_eq!(setup.refreshes(), 1);
    assert!(setup.works(&token.access_token).await);
}

#[tokio::test]
async fn disconnecting_revokes_the_grant_at_asana_and_destroys_the_credential() {
    let setup = start("sqlite", 1).await;
    setup.connect_alice().await;
    let (access_token, refresh_token) = setup.stored().await;
    let disconnected = setup
        .client(0, &setup.operator)
        .disconnect_account(pb::DisconnectAccountRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            reason: "left the company".into(),
        })
        .await
        .expect("disconnected")
        .into_inner();
    assert!(disconnected.revoked_upstream);
    assert_eq!(
        disconnected.account.as_ref().expect("account").state,
        pb::AccountState::Revoked as i32
    );
    assert_eq!(
        setup.account("asana").await.state,
        pb::AccountState::Revoked as i32
    );

    let (status, error) = setup.try_refresh(&refresh_token).await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    assert!(!setup.works(&access_token).await);

    let at = Location {
        tenant: TENANT,
        connection: "asana",
        identifier: ALICE,
    };
    let secrets = setup.secrets();
    assert!(secrets.read(at).await.expect("vault answers").is_none());
    assert_eq!(
        secrets.current_version(at).await.expect("vault answers"),
        None,
        "no version and no metadata is left"
    );

    let denied = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect_err("disconnected");
    assert_eq!(denied.code(), Code::FailedPrecondition);
    assert_eq!(
        denied.get_details_error_info().expect("ErrorInfo").reason,
        "AUTH_REQUIRED"
    );
    // Connected again, the account is a new one: its versions start over, so nothing about
    // the old credential (its account and version in audit rows, a cached token, an MCP
    // session) can stand for the new one.
    let old_account = disconnected.account.expect("account").account_id;
    setup.connect_alice().await;
    let reconnected = setup.account("asana").await;
    assert_eq!(reconnected.state, pb::AccountState::Active as i32);
    assert_ne!(reconnected.account_id, old_account);
    assert_logs_hold_none_of(&[access_token, refresh_token, setup.client_secret.clone()]);
}

#[tokio::test]
async fn deleting_a_tenant_revokes_its_grants_at_asana_first() {
    let setup = start("sqlite", 1).await;
    setup.connect_alice().await;
    setup.connect("bob@acme.test").await;
    let (_, alice_refresh) = setup.stored().await;
    let (_, bob_refresh) = setup.stored_of("bob@acme.test").await;
    let deleted = setup
        .client(0, &setup.operator)
        .delete_tenant(pb::DeleteTenantRequest {
            tenant: TENANT.into(),
            confirm_tenant: TENANT.into(),
        })
        .await
        .expect("deleted")
        .into_inner();
    assert_eq!(deleted.accounts_deleted, 2);
    assert_eq!(deleted.grants_revoked_upstream, 2);
    assert!(deleted.encryption_key_destroyed);
    for refresh_token in [&alice_refresh, &bob_refresh] {
        let (status, error) = setup.try_refresh(refresh_token).await;
        assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    }
    assert_logs_hold_none_of(&[alice_refresh, bob_refresh]);
}

/// The next message of `stream` within five seconds.
async fn next_change(
    stream: &mut tonic::Streaming<pb::WatchAccountChangesResponse>,
) -> pb::WatchAccountChangesResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a message within 5 s")
        .expect("the stream is healthy")
        .expect("the stream goes on")
}

/// Messages of `stream` until one carries a change; that change.
async fn next_real_change(
    stream: &mut tonic::Streaming<pb::WatchAccountChangesResponse>,
) -> pb::AccountChange {
    loop {
        let message = next_change(stream).await;
        assert!(!message.reset);
        if let Some(change) = message.changes.into_iter().next() {
            return change;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_streams_account_changes_in_order_and_resumes_from_a_cursor() {
    let setup = start("sqlite", 2).await;
    let watch = |replica: usize, after: Option<u64>| {
        let mut client = setup.client(replica, &setup.reader);
        async move {
            client
                .watch_account_changes(pb::WatchAccountChangesRequest {
                    after_sequence: after,
                })
                .await
                .expect("the executor role may watch")
                .into_inner()
        }
    };
    // A stream on replica 1 hears of what happens through replica 0.
    let mut stream = watch(1, None).await;
    let first = next_change(&mut stream).await;
    assert!(first.changes.is_empty() && !first.reset);
    let start = first.cursor;

    setup.connect_alice().await;
    let granted = next_real_change(&mut stream).await;
    assert_eq!(
        (
            granted.kind(),
            granted.tenant.as_str(),
            granted.connection_name.as_str(),
            granted.identifier.as_str()
        ),
        (
            pb::AccountChangeKind::CredentialReplaced,
            TENANT,
            "asana",
            ALICE
        )
    );
    assert_eq!(granted.sequence, start + 1);
    assert!(granted.credential_version >= 1);

    // Asana revokes the grant: the next token request finds out, the account needs a consent.
    let (_, refresh_token) = setup.stored().await;
    setup.revoke_at_asana(&refresh_token).await;
    setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect_err("the grant is gone");
    let needs = next_real_change(&mut stream).await;
    assert_eq!(needs.kind(), pb::AccountChangeKind::NeedsReauth);
    assert_eq!(needs.sequence, start + 2);

    setup
        .client(0, &setup.operator)
        .disconnect_account(pb::DisconnectAccountRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            reason: String::new(),
        })
        .await
        .expect("disconnected");
    let revoked = next_real_change(&mut stream).await;
    assert_eq!(revoked.kind(), pb::AccountChangeKind::Revoked);

    setup
        .client(0, &setup.operator)
        .delete_tenant(pb::DeleteTenantRequest {
            tenant: TENANT.into(),
            confirm_tenant: TENANT.into(),
        })
        .await
        .expect("deleted");
    let deleted = next_real_change(&mut stream).await;
    assert_eq!(
        (deleted.kind(), deleted.identifier.as_str()),
        (pb::AccountChangeKind::TenantDeleted, "")
    );
    assert_eq!(deleted.sequence, start + 4, "in order, without gaps");

    // A subscriber that comes back with its cursor gets what it missed, on any replica.
    let mut resumed = watch(0, Some(start + 1)).await;
    let replay: Vec<u64> = next_change(&mut resumed)
        .await
        .changes
        .iter()
        .map(|c| c.sequence)
        .collect();
    assert_eq!(replay, [start + 2, start + 3, start + 4]);
    // One from another log (a cursor this log never issued) must start over.
    let mut unknown = watch(1, Some(start + 1000)).await;
    let reset = next_change(&mut unknown).await;
    assert!(reset.reset, "a cursor ahead of the log is a reset");
    assert_eq!(reset.cursor, start + 4);

    // Only their tenants' changes reach a subscriber, and only callers with the executor role
    // watch.
    let mut other = setup
        .client(0, &setup.other_tenant_reader)
        .watch_account_changes(pb::WatchAccountChangesRequest {
            after_sequence: Some(start),
        })
        .await
        .expect("globex's executor may watch")
        .into_inner();
    let nothing = next_change(&mut other).await;
    assert!(nothing.changes.is_empty(), "{:?}", nothing.changes);
    assert_eq!(
        nothing.cursor,
        start + 4,
        "yet its cursor moves past acme's changes"
    );
    let denied = setup
        .client(0, &setup.agent)
        .watch_account_changes(pb::WatchAccountChangesRequest::default())
        .await
        .expect_err("onboarding does not include WatchAccountChanges");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

/// `agentauth.vault.refreshes{result}`, the refresh-success objective's metric: one count per
/// refresh grant sent to Asana, by how it answered.
#[tokio::test]
async fn refresh_grants_are_counted_by_how_asana_answered() {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    // This test's process has no other meter provider (each test runs in its own process).
    opentelemetry::global::set_meter_provider(provider.clone());
    let setup = start("sqlite", 1).await;
    setup.connect_alice().await;
    let longer = Some(Duration::from_secs(2 * 3600));
    setup
        .get_token(0, &setup.reader, longer)
        .await
        .expect("refreshed");
    setup.fail_token_endpoint_once();
    setup
        .get_token(0, &setup.reader, longer)
        .await
        .expect_err("the token endpoint is down");
    setup
        .get_token(0, &setup.reader, longer)
        .await
        .expect("refreshed on the retry");
    let (_, refresh_token) = setup.stored().await;
    setup.revoke_at_asana(&refresh_token).await;
    setup
        .get_token(0, &setup.reader, longer)
        .await
        .expect_err("the grant is gone");
    provider.force_flush().expect("flush");

    let mut counted = std::collections::BTreeMap::new();
    for resource in exporter.get_finished_metrics().expect("metrics") {
        for scope in resource.scope_metrics() {
            for metric in scope
                .metrics()
                .filter(|m| m.name() == "agentauth.vault.refreshes")
            {
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
                    for point in sum.data_points() {
                        let result = point
                            .attributes()
                            .find(|kv| kv.key.as_str() == "result")
                            .map(|kv| kv.value.to_string())
                            .unwrap_or_default();
                        counted.insert(result, point.value());
                    }
                }
            }
        }
    }
    assert_eq!(
        counted,
        [("invalid_grant", 1), ("success", 2), ("transient", 1)]
            .map(|(result, n)| (result.to_owned(), n))
            .into(),
        "each grant once, by Asana's answer"
    );
    assert_eq!(
        setup.refreshes(),
        2,
        "the sandbox granted the two counted as successes"
    );
}
