//! Asana's per-token limits, enforced before a request leaves (`reference/asana-platform.md`
//! §4): at most 50 reads and 15 writes in flight, a per-minute budget (150 or 1,500, per
//! connection), search at 60 per minute, and after a 429 the whole token waits out
//! `Retry-After`.
//!
//! Buckets are kept per account (tenant, connection, identifier): Asana counts per token, and an
//! account's token changes only by refresh, which starts no new quota worth spending. A call
//! waits for its slot until its deadline; when the slot cannot come in time it fails at once
//! with the time after which it could ([`Exhausted`]), without taking anything, so the
//! sandbox's counters (and Asana's) never see a request this side knew would be refused.
//!
//! One replica keeps its buckets in process ([`local`], the default). Several replicas serving
//! one user share them through Redis (`[limits.shared]`, [`shared`]): one atomic script checks
//! and takes every slot a request needs, in-flight slots are leases a dead replica's expire,
//! and Redis's clock is the only clock. While Redis cannot be reached, a call is refused
//! UNAVAILABLE (`on_outage = "fail_closed"`) or spends this replica's share of the budget in
//! process (`"replica_share"`: every limit divided by `replicas`).

use std::sync::Arc;
use std::time::Duration;

use asana_tools::RateClass;
use tokio::time::Instant;

use crate::config::{LimitsConfig, OnOutage};

mod local;
mod shared;

use local::{Bucket, Local, LocalPermit};
use shared::{Keys, Shared, SharedPermit};

const MINUTE: Duration = Duration::from_secs(60);

/// Whose budget a request spends: the account's, whose token Asana counts.
pub(crate) use crate::tokens::AccountKey as BucketKey;

/// A request this side will not send before the caller's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted {
    /// When to try again.
    pub retry_after: Duration,
    /// Which limit refused it.
    pub limit: Limit,
}

impl Exhausted {
    /// A refusal by `limit`, to be tried again after `retry_after` (never sooner than 100 ms).
    fn refused(limit: Limit, retry_after: Duration) -> Self {
        Self {
            retry_after: retry_after.max(Duration::from_millis(100)),
            limit,
        }
    }
}

/// Why a request may not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A limit: not before the caller's deadline.
    Exhausted(Exhausted),
    /// The shared limiter cannot be reached and fails closed.
    Unavailable(String),
}

/// The limit that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    ReadsInFlight,
    WritesInFlight,
    PerMinute,
    SearchPerMinute,
    /// Asana answered 429 and the token is waiting out `Retry-After`.
    BackingOff,
}

impl Limit {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::ReadsInFlight => "reads in flight per Asana token",
            Self::WritesInFlight => "writes in flight per Asana token",
            Self::PerMinute => "requests per minute per Asana token",
            Self::SearchPerMinute => "search requests per minute per Asana token",
            Self::BackingOff => "Asana's Retry-After for this token",
        }
    }
}

/// What a request needs from its bucket: `reads` and `writes` in-flight slots (a batch needs
/// one per action) and whether it is a search.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Demand {
    pub reads: u32,
    pub writes: u32,
    pub searches: u32,
}

impl Demand {
    /// No slots: a request that only waits out the token's back-off.
    pub(crate) const NONE: Self = Self {
        reads: 0,
        writes: 0,
        searches: 0,
    };

    pub(crate) fn of(class: RateClass) -> Self {
        match class {
            RateClass::Read => Self {
                reads: 1,
                writes: 0,
                searches: 0,
            },
            RateClass::Write => Self {
                reads: 0,
                writes: 1,
                searches: 0,
            },
            RateClass::Search => Self {
                reads: 1,
                writes: 0,
                searches: 1,
            },
        }
    }

    pub(crate) fn add(&mut self, other: Self) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.searches += other.searches;
    }

    fn requests(self) -> usize {
        (self.reads + self.writes) as usize
    }
}

/// The in-flight and search limits of one budget.
#[derive(Debug, Clone, Copy)]
struct Slots {
    reads_in_flight: u32,
    writes_in_flight: u32,
    search_per_minute: u32,
}

impl Slots {
    fn of(config: &LimitsConfig) -> Self {
        Self {
            reads_in_flight: config.reads_in_flight,
            writes_in_flight: config.writes_in_flight,
            search_per_minute: config.search_per_minute,
        }
    }

    /// One of `replicas` equal shares, each at least 1, so that together they never exceed the
    /// whole.
    fn share(self, replicas: u32) -> Self {
        Self {
            reads_in_flight: share(self.reads_in_flight, replicas),
            writes_in_flight: share(self.writes_in_flight, replicas),
            search_per_minute: share(self.search_per_minute, replicas),
        }
    }

    /// Refuses at once a demand these limits (with `per_minute`) could never hold.
    fn check(self, demand: Demand, per_minute: u32) -> Result<(), Exhausted> {
        let never = |limit| Err(Exhausted::refused(limit, MINUTE));
        if demand.reads > self.reads_in_flight {
            return never(Limit::ReadsInFlight);
        }
        if demand.writes > self.writes_in_flight {
            return never(Limit::WritesInFlight);
        }
        if demand.requests() > per_minute as usize {
            return never(Limit::PerMinute);
        }
        if demand.searches > self.search_per_minute {
            return never(Limit::SearchPerMinute);
        }
        Ok(())
    }
}

fn share(limit: u32, replicas: u32) -> u32 {
    (limit / replicas.max(1)).max(1)
}

/// The limiter: in process, or shared through Redis with this replica's share in process for
/// an outage.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_wait: Duration,
    local: Local,
    shared: Option<Shared>,
}

/// One account's budget, resolved once per call rather than per attempt: its in-process bucket
/// and, when shared, its keys in Redis.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    local: Arc<Bucket>,
    shared: Option<Arc<Keys>>,
}

/// The slots a request holds while it is out; dropping it frees them.
#[derive(Debug)]
pub(crate) enum Permit {
    Local(LocalPermit),
    Shared(SharedPermit),
}

impl Permit {
    /// Asana answered 429: every request of this token waits `retry_after` (from now), on every
    /// replica.
    pub(crate) async fn back_off(&self, retry_after: Duration) {
        match self {
            Self::Local(permit) => permit.bucket.back_off(retry_after),
            Self::Shared(permit) => permit.back_off(retry_after).await,
        }
    }
}

/// Checks `[limits]` without connecting to anything (`--check-config` runs it).
pub(crate) fn check(config: &LimitsConfig) -> anyhow::Result<()> {
    let Some(shared) = &config.shared else {
        return Ok(());
    };
    anyhow::ensure!(
        redis::parse_redis_url(&shared.url).is_some(),
        "[limits.shared] url must be a redis:// or rediss:// URL"
    );
    anyhow::ensure!(
        shared.replicas >= 1,
        "[limits.shared] replicas must be at least 1"
    );
    anyhow::ensure!(
        shared.lease >= Duration::from_secs(1) && !shared.timeout.is_zero(),
        "[limits.shared] lease must be at least 1s, and timeout more than 0"
    );
    Ok(())
}

impl Limiter {
    pub(crate) fn new(config: &LimitsConfig) -> anyhow::Result<Self> {
        let slots = Slots::of(config);
        let (local, shared) = match &config.shared {
            None => (Local::new(slots), None),
            Some(shared) => {
                check(config)?;
                (
                    Local::new(slots.share(shared.replicas)),
                    Some(Shared::new(shared, slots)?),
                )
            }
        };
        Ok(Self {
            max_wait: config.max_wait,
            local,
            shared,
        })
    }

    /// How long a call may wait for its slots when its caller set no shorter deadline.
    pub(crate) fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The account's budget, looked up once per call.
    pub(crate) fn budget(&self, key: &BucketKey) -> Budget {
        Budget {
            local: self.local.bucket(key),
            shared: self
                .shared
                .as_ref()
                .map(|shared| Arc::new(shared.keys(key))),
        }
    }

    /// Waits until `demand` may be sent from `budget` within `per_minute`, or fails at once when
    /// it could not be before `deadline`.
    pub(crate) async fn acquire(
        &self,
        budget: &Budget,
        demand: Demand,
        per_minute: u32,
        deadline: Instant,
    ) -> Result<Permit, Refusal> {
        let mut per_minute = per_minute;
        if let (Some(shared), Some(keys)) = (&self.shared, &budget.shared) {
            match shared
                .acquire(keys, &budget.local, demand, per_minute, deadline)
                .await
            {
                Ok(permit) => return Ok(Permit::Shared(permit)),
                Err(shared::Refused::Exhausted(exhausted)) => {
                    return Err(Refusal::Exhausted(exhausted));
                }
                Err(shared::Refused::Down(reason)) => match shared.on_outage() {
                    OnOutage::FailClosed => return Err(Refusal::Unavailable(reason)),
                    // This replica's share, in process.
                    OnOutage::ReplicaShare => per_minute = share(per_minute, shared.replicas()),
                },
            }
        }
        self.local
            .acquire(&budget.local, demand, per_minute, deadline)
            .await
            .map(Permit::Local)
            .map_err(Refusal::Exhausted)
    }

    /// Whether calls can be admitted: with a shared limiter that fails closed, only while Redis
    /// answers.
    pub(crate) async fn check(&self) -> Result<(), String> {
        match &self.shared {
            Some(shared) if shared.on_outage() == OnOutage::FailClosed => shared.ping().await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn key(identifier: &str) -> BucketKey {
        BucketKey {
            tenant: "acme".to_owned(),
            connection: "asana-pat".to_owned(),
            identifier: identifier.to_owned(),
        }
    }

    /// Two reads and one write in flight, two searches a minute.
    fn limiter() -> Limiter {
        Limiter::new(&LimitsConfig {
            reads_in_flight: 2,
            writes_in_flight: 1,
            search_per_minute: 2,
            max_wait: 10 * SECOND,
            shared: None,
        })
        .expect("an in-process limiter")
    }

    fn read() -> Demand {
        Demand::of(RateClass::Read)
    }

    fn refused(limit: Limit, retry_after: Duration) -> Exhausted {
        Exhausted { retry_after, limit }
    }

    /// `Limiter::acquire`, whose in-process limiter never answers `Unavailable`.
    async fn acquire(
        limiter: &Limiter,
        budget: &Budget,
        demand: Demand,
        per_minute: u32,
        deadline: Instant,
    ) -> Result<Permit, Exhausted> {
        limiter
            .acquire(budget, demand, per_minute, deadline)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Exhausted(exhausted) => exhausted,
                Refusal::Unavailable(reason) => panic!("in-process: {reason}"),
            })
    }

    #[tokio::test(start_paused = true)]
    async fn the_minute_budget_refuses_at_once_until_its_oldest_request_leaves() {
        let limiter = limiter();
        let start = Instant::now();
        for _ in 0..3 {
            acquire(&limiter, &limiter.budget(&key("alice")), read(), 3, start)
                .await
                .expect("within the budget");
        }
        let error = acquire(
            &limiter,
            &limiter.budget(&key("alice")),
            read(),
            3,
            start + 10 * SECOND,
        )
        .await
        .expect_err("a fourth request in the minute");
        assert_eq!(error, refused(Limit::PerMinute, 60 * SECOND));
        assert_eq!(Instant::now(), start, "refused without waiting");
        acquire(&limiter, &limiter.budget(&key("bob")), read(), 3, start)
            .await
            .expect("another account has its own budget");

        tokio::time::advance(45 * SECOND).await;
        let error = acquire(
            &limiter,
            &limiter.budget(&key("alice")),
            read(),
            3,
            Instant::now() + 10 * SECOND,
        )
        .await
        .expect_err("still 15 s to go");
        assert_eq!(error, refused(Limit::PerMinute, 15 * SECOND));

        let waiting = Instant::now();
        acquire(
            &limiter,
            &limiter.budget(&key("alice")),
            read(),
            3,
            waiting + 20 * SECOND,
        )
        .await
        .expect("the slot comes within the deadline");
        assert_eq!(waiting.elapsed(), 15 * SECOND, "waited for the slot");
        for _ in 0..2 {
            acquire(
                &limiter,
                &limiter.budget(&key("alice")),
                read(),
                3,
                Instant::now(),
            )
            .await
            .expect("the whole minute's requests left the window");
        }
        assert!(
            acquire(
                &limiter,
                &limiter.budget(&key("alice")),
                read(),
                3,
                Instant::now()
            )
            .await
            .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn searches_have_their_own_budget_and_count_against_the_minute_too() {
        let limiter = limiter();
        let search = Demand::of(RateClass::Search);
        let now = Instant::now();
        for _ in 0..2 {
            acquire(&limiter, &limiter.budget(&key("alice")), search, 3, now)
                .await
                .expect("two searches a minute");
        }
        let error = acquire(
            &limiter,
            &limiter.budget(&key("alice")),
            search,
            3,
            now + 10 * SECOND,
        )
        .await
        .expect_err("a third search");
        assert_eq!(error, refused(Limit::SearchPerMinute, 60 * SECOND));
        acquire(&limiter, &limiter.budget(&key("alice")), read(), 3, now)
            .await
            .expect("a plain read is not a search");
        let error = acquire(&limiter, &limiter.budget(&key("alice")), read(), 3, now)
            .await
            .expect_err(
                "two searches and a read spent the three; the refused search spent nothing",
            );
        assert_eq!(error.limit, Limit::PerMinute);
        assert_eq!(Instant::now(), now);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_slots_are_held_by_the_permit_and_freed_when_it_drops() {
        let limiter = limiter();
        let alice = limiter.budget(&key("alice"));
        let first = acquire(&limiter, &alice, read(), 150, Instant::now() + SECOND)
            .await
            .expect("1st read");
        let _second = acquire(&limiter, &alice, read(), 150, Instant::now() + SECOND)
            .await
            .expect("2nd read");
        let waiting = Instant::now();
        let error = acquire(&limiter, &alice, read(), 150, waiting + SECOND)
            .await
            .expect_err("a third read in flight");
        assert_eq!(error, refused(Limit::ReadsInFlight, SECOND));
        assert_eq!(waiting.elapsed(), SECOND, "waited until the deadline");
        let write = acquire(
            &limiter,
            &alice,
            Demand::of(RateClass::Write),
            150,
            Instant::now(),
        )
        .await
        .expect("writes have their own pool");
        let error = acquire(
            &limiter,
            &alice,
            Demand::of(RateClass::Write),
            150,
            Instant::now() + SECOND,
        )
        .await
        .expect_err("a second write in flight");
        assert_eq!(error.limit, Limit::WritesInFlight);
        drop(write);

        let waiting = Instant::now();
        let (third, ()) = tokio::join!(
            acquire(&limiter, &alice, read(), 150, waiting + 10 * SECOND),
            async move {
                tokio::time::sleep(2 * SECOND).await;
                drop(first);
            }
        );
        third.expect("the freed slot");
        assert_eq!(waiting.elapsed(), 2 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_makes_every_request_of_the_token_wait() {
        let limiter = limiter();
        let alice = limiter.budget(&key("alice"));
        let permit = acquire(&limiter, &alice, read(), 150, Instant::now())
            .await
            .expect("read");
        permit.back_off(5 * SECOND).await;
        permit.back_off(SECOND).await;
        drop(permit);
        let error = acquire(
            &limiter,
            &alice,
            Demand::of(RateClass::Write),
            150,
            Instant::now() + SECOND,
        )
        .await
        .expect_err("backing off");
        assert_eq!(
            error,
            refused(Limit::BackingOff, 5 * SECOND),
            "a shorter Retry-After never shortens a longer one"
        );
        acquire(
            &limiter,
            &limiter.budget(&key("bob")),
            read(),
            150,
            Instant::now(),
        )
        .await
        .expect("another account does not wait");
        let waiting = Instant::now();
        acquire(&limiter, &alice, read(), 150, waiting + 10 * SECOND)
            .await
            .expect("the back-off ends within the deadline");
        assert_eq!(waiting.elapsed(), 5 * SECOND);

        // A request that takes no slots (an MCP session's tools/list) waits out the back-off
        // too.
        let permit = acquire(&limiter, &alice, read(), 150, Instant::now())
            .await
            .expect("free again");
        permit.back_off(3 * SECOND).await;
        drop(permit);
        let error = acquire(&limiter, &alice, Demand::NONE, 150, Instant::now() + SECOND)
            .await
            .expect_err("backing off beyond the deadline");
        assert_eq!(error, refused(Limit::BackingOff, 3 * SECOND));
        acquire(
            &limiter,
            &limiter.budget(&key("bob")),
            Demand::NONE,
            150,
            Instant::now(),
        )
        .await
        .expect("bob is not backing off");
        let waiting = Instant::now();
        acquire(&limiter, &alice, Demand::NONE, 150, waiting + 10 * SECOND)
            .await
            .expect("within the deadline");
        assert_eq!(waiting.elapsed(), 3 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_demand_no_limit_can_ever_hold_is_refused_at_once() {
        let limiter = limiter();
        let alice = limiter.budget(&key("alice"));
        let far = Instant::now() + 600 * SECOND;
        let demand = |reads, writes, searches| Demand {
            reads,
            writes,
            searches,
        };
        // (demand, per-minute budget, the limit that refuses it)
        let cases = [
            (demand(3, 0, 0), 150, Limit::ReadsInFlight),
            (demand(0, 2, 0), 150, Limit::WritesInFlight),
            (demand(2, 1, 0), 2, Limit::PerMinute),
            (demand(2, 0, 3), 150, Limit::SearchPerMinute),
        ];
        let start = Instant::now();
        for (demand, per_minute, limit) in cases {
            let error = acquire(&limiter, &alice, demand, per_minute, far)
                .await
                .expect_err("never fits");
            assert_eq!(error.limit, limit, "{demand:?}");
            assert!(error.retry_after > Duration::ZERO);
            assert_eq!(Instant::now(), start, "{demand:?} refused without waiting");
        }
        acquire(&limiter, &alice, demand(2, 1, 2), 3, start)
            .await
            .expect("nothing was spent by the refusals");
    }
}
