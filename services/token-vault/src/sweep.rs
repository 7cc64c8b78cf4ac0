//! The sweeper: refreshes OAuth credentials before they expire, so one-hour tokens stay warm
//! and calls rarely wait on a refresh.
//!
//! - Every `oauth.sweep_interval` (±20% jitter, so replicas drift apart) it lists the ACTIVE
//!   and EXPIRED OAuth accounts expiring within `oauth.refresh_margin`.
//! - Each goes through the [`Refresher`], so its lease keeps it to one refresh per account
//!   across replicas, with at most `oauth.sweep_concurrency` refreshes at a time.
//! - An account whose last refresh failed transiently waits out a backoff (doubling per failure
//!   in a row, capped) before the sweeper tries it again.
//! - Failures are logged (never a token); the Refresher audits them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Error;
use crate::connections::Registry;
use crate::records::{Account, Store};
use crate::refresh::Refresher;

/// The most accounts one sweep looks at.
const BATCH: usize = 1000;
/// The wait after the first transient failure in a row; it doubles with each further one.
const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// The longest wait between retries of a failing account.
const BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);

/// Refreshes expiring OAuth credentials in the background.
#[derive(Debug)]
pub struct Sweeper {
    pub refresher: Arc<Refresher>,
    pub connections: Arc<Registry>,
    pub records: Store,
    pub interval: Duration,
    pub margin: Duration,
    pub concurrency: usize,
    /// How long the account change log keeps a change.
    pub change_retention: Duration,
}

/// `interval` scaled by a random factor in [0.8, 1.2).
fn jittered(interval: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    let factor = 0.8 + 0.4 * (f64::from(random) / (f64::from(u32::MAX) + 1.0));
    interval.mul_f64(factor)
}

/// How long after its last failure `account` waits before the sweeper retries it.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// Whether `account` is still waiting out its backoff.
fn backing_off(account: &Account) -> bool {
    if account.refresh_failures == 0 {
        return false;
    }
    let wait = TimeDelta::from_std(backoff(account.refresh_failures)).unwrap_or(TimeDelta::MAX);
    account
        .refresh_failed_at
        .is_some_and(|at| Utc::now() - at < wait)
}

impl Sweeper {
    /// Sweeps every jittered interval until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(jittered(self.interval)) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.clone().sweep() => {}
            }
        }
    }

    /// One sweep: forgets changes past their retention and consents that expired unused, then
    /// refreshes every due account, a bounded number at a time.
    async fn sweep(self: Arc<Self>) {
        let now = Utc::now();
        let retention = TimeDelta::from_std(self.change_retention).unwrap_or(TimeDelta::MAX);
        match self
            .records
            .prune(now.checked_sub_signed(retention).unwrap_or(now), now)
            .await
        {
            Ok((changes, states)) if changes + states > 0 => {
                debug!(
                    changes,
                    states, "the sweeper pruned old changes and expired consents"
                )
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "the sweeper cannot prune old changes and consents"),
        }
        let before = Utc::now() + TimeDelta::from_std(self.margin).unwrap_or(TimeDelta::MAX);
        let due = match self.records.expiring(before, BATCH).await {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "the sweeper cannot list expiring accounts");
                return;
            }
        };
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut refreshes = JoinSet::new();
        for account in due.into_iter().filter(|a| !backing_off(a)) {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let sweeper = self.clone();
            refreshes.spawn(async move {
                sweeper.refresh(account).await;
                drop(permit);
            });
        }
        while refreshes.join_next().await.is_some() {}
    }

    async fn refresh(&self, account: Account) {
        let Some(connection) = self.connections.get(&account.connection_name) else {
            debug!(
                account = %account.account_id,
                connection = account.connection_name,
                "the sweeper skips an account of a connection no longer configured"
            );
            return;
        };
        let account_id = account.account_id.clone();
        match self
            .refresher
            .access(connection, account, self.margin, None)
            .await
        {
            Ok(current) => debug!(
                account = %account_id,
                credential_version = current.version,
                "the sweeper kept a credential warm"
            ),
            Err(Error::AuthRequired { .. }) => debug!(
                account = %account_id,
                "the sweeper found an account that needs a new consent"
            ),
            Err(error) => warn!(
                account = %account_id,
                %error,
                "the sweeper could not refresh a credential"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{backoff, jittered};
    use std::time::Duration;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(60));
            assert!(
                d >= Duration::from_secs(48) && d < Duration::from_secs(72),
                "{d:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(3), Duration::from_secs(120));
        assert_eq!(backoff(40), Duration::from_secs(1800));
    }
}
