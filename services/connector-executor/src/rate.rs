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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use asana_tools::RateClass;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::LimitsConfig;

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

/// The limiter: one bucket per account.
#[derive(Debug)]
pub(crate) struct Limiter {
    config: LimitsConfig,
    buckets: Mutex<HashMap<BucketKey, Arc<Bucket>>>,
}

#[derive(Debug)]
struct Bucket {
    reads: Arc<Semaphore>,
    writes: Arc<Semaphore>,
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    /// When each request of the last minute was sent.
    minute: VecDeque<Instant>,
    searches: VecDeque<Instant>,
    backoff_until: Option<Instant>,
}

/// One account's budget: its bucket, resolved once per call rather than per attempt.
#[derive(Debug, Clone)]
pub(crate) struct Budget(Arc<Bucket>);

/// In-flight slots held while a request is out; dropping it frees them.
#[derive(Debug)]
pub(crate) struct Permit {
    _reads: Option<OwnedSemaphorePermit>,
    _writes: Option<OwnedSemaphorePermit>,
    bucket: Arc<Bucket>,
}

impl Permit {
    /// Asana answered 429: every request of this token waits `retry_after` (from now).
    pub(crate) fn back_off(&self, retry_after: Duration) {
        self.bucket.back_off(retry_after);
    }
}

impl Bucket {
    fn back_off(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut windows = lock(&self.windows);
        if windows.backoff_until.is_none_or(|current| current < until) {
            windows.backoff_until = Some(until);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Limiter {
    pub(crate) fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How long a call may wait for its slots when its caller set no shorter deadline.
    pub(crate) fn max_wait(&self) -> Duration {
        self.config.max_wait
    }

    /// The account's budget, looked up once per call.
    pub(crate) fn budget(&self, key: &BucketKey) -> Budget {
        let mut buckets = lock(&self.buckets);
        if let Some(bucket) = buckets.get(key) {
            return Budget(bucket.clone());
        }
        let bucket = Arc::new(Bucket {
            reads: Arc::new(Semaphore::new(self.config.reads_in_flight as usize)),
            writes: Arc::new(Semaphore::new(self.config.writes_in_flight as usize)),
            windows: Mutex::new(Windows::default()),
        });
        buckets.insert(key.clone(), bucket.clone());
        Budget(bucket)
    }

    /// Waits until `demand` may be sent from `budget` within `per_minute`, or fails at once when it
    /// could not be before `deadline`.
    pub(crate) async fn acquire(
        &self,
        budget: &Budget,
        demand: Demand,
        per_minute: u32,
        deadline: Instant,
    ) -> Result<Permit, Exhausted> {
        let refuse = |limit, retry_after: Duration| Exhausted {
            retry_after: retry_after.max(Duration::from_millis(100)),
            limit,
        };
        if demand.reads > self.config.reads_in_flight {
            return Err(refuse(Limit::ReadsInFlight, MINUTE));
        }
        if demand.writes > self.config.writes_in_flight {
            return Err(refuse(Limit::WritesInFlight, MINUTE));
        }
        if demand.requests() > per_minute as usize {
            return Err(refuse(Limit::PerMinute, MINUTE));
        }
        if demand.searches > self.config.search_per_minute {
            return Err(refuse(Limit::SearchPerMinute, MINUTE));
        }
        let bucket = budget.0.clone();
        let slots = |semaphore: &Arc<Semaphore>, count: u32, limit| {
            let semaphore = semaphore.clone();
            async move {
                if count == 0 {
                    return Ok(None);
                }
                match tokio::time::timeout_at(deadline, semaphore.acquire_many_owned(count)).await {
                    Ok(Ok(permit)) => Ok(Some(permit)),
                    _ => Err(refuse(limit, Duration::from_secs(1))),
                }
            }
        };
        let reads = slots(&bucket.reads, demand.reads, Limit::ReadsInFlight).await?;
        let writes = slots(&bucket.writes, demand.writes, Limit::WritesInFlight).await?;
        loop {
            let now = Instant::now();
            let wait_until = {
                let mut windows = lock(&bucket.windows);
                match windows.next_slot(now, demand, per_minute, self.config.search_per_minute) {
                    None => {
                        windows.take(now, demand);
                        None
                    }
                    Some(slot) => Some(slot),
                }
            };
            match wait_until {
                None => {
                    return Ok(Permit {
                        _reads: reads,
                        _writes: writes,
                        bucket,
                    });
                }
                Some((at, limit)) if at > deadline => return Err(refuse(limit, at - now)),
                Some((at, _)) => tokio::time::sleep_until(at).await,
            }
        }
    }
}

impl Windows {
    /// `None` when `demand` may go now; otherwise when it could, and which limit says so.
    fn next_slot(
        &mut self,
        now: Instant,
        demand: Demand,
        per_minute: u32,
        search_per_minute: u32,
    ) -> Option<(Instant, Limit)> {
        if let Some(until) = self.backoff_until {
            if until > now {
                return Some((until, Limit::BackingOff));
            }
            self.backoff_until = None;
        }
        let cutoff = now.checked_sub(MINUTE);
        for window in [&mut self.minute, &mut self.searches] {
            while window
                .front()
                .is_some_and(|t| cutoff.is_some_and(|c| *t <= c))
            {
                window.pop_front();
            }
        }
        let full = |window: &VecDeque<Instant>, wanted: usize, budget: u32| {
            let budget = budget as usize;
            if wanted > budget {
                return Some(now + MINUTE);
            }
            let over = (window.len() + wanted).checked_sub(budget)?;
            over.checked_sub(1)
                .and_then(|index| window.get(index))
                .map(|oldest| *oldest + MINUTE)
        };
        if let Some(at) = full(&self.minute, demand.requests(), per_minute) {
            return Some((at, Limit::PerMinute));
        }
        if demand.searches > 0
            && let Some(at) = full(&self.searches, demand.searches as usize, search_per_minute)
        {
            return Some((at, Limit::SearchPerMinute));
        }
        None
    }

    fn take(&mut self, now: Instant, demand: Demand) {
        self.minute
            .extend(std::iter::repeat_n(now, demand.requests()));
        self.searches
            .extend(std::iter::repeat_n(now, demand.searches as usize));
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
        Limiter::new(LimitsConfig {
            reads_in_flight: 2,
            writes_in_flight: 1,
            search_per_minute: 2,
            max_wait: 10 * SECOND,
        })
    }

    fn read() -> Demand {
        Demand::of(RateClass::Read)
    }

    fn refused(limit: Limit, retry_after: Duration) -> Exhausted {
        Exhausted { retry_after, limit }
    }

    #[tokio::test(start_paused = true)]
    async fn the_minute_budget_refuses_at_once_until_its_oldest_request_leaves() {
        let limiter = limiter();
        let start = Instant::now();
        for _ in 0..3 {
            limiter
                .acquire(&limiter.budget(&key("alice")), read(), 3, start)
                .await
                .expect("within the budget");
        }
        let error = limiter
            .acquire(
                &limiter.budget(&key("alice")),
                read(),
                3,
                start + 10 * SECOND,
            )
            .await
            .expect_err("a fourth request in the minute");
        assert_eq!(error, refused(Limit::PerMinute, 60 * SECOND));
        assert_eq!(Instant::now(), start, "refused without waiting");
        limiter
            .acquire(&limiter.budget(&key("bob")), read(), 3, start)
            .await
            .expect("another account has its own budget");

        tokio::time::advance(45 * SECOND).await;
        let error = limiter
            .acquire(
                &limiter.budget(&key("alice")),
                read(),
                3,
                Instant::now() + 10 * SECOND,
            )
            .await
            .expect_err("still 15 s to go");
        assert_eq!(error, refused(Limit::PerMinute, 15 * SECOND));

        let waiting = Instant::now();
        limiter
            .acquire(
                &limiter.budget(&key("alice")),
                read(),
                3,
                waiting + 20 * SECOND,
            )
            .await
            .expect("the slot comes within the deadline");
        assert_eq!(waiting.elapsed(), 15 * SECOND, "waited for the slot");
        for _ in 0..2 {
            limiter
                .acquire(&limiter.budget(&key("alice")), read(), 3, Instant::now())
                .await
                .expect("the whole minute's requests left the window");
        }
        assert!(
            limiter
                .acquire(&limiter.budget(&key("alice")), read(), 3, Instant::now())
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
            limiter
                .acquire(&limiter.budget(&key("alice")), search, 3, now)
                .await
                .expect("two searches a minute");
        }
        let error = limiter
            .acquire(&limiter.budget(&key("alice")), search, 3, now + 10 * SECOND)
            .await
            .expect_err("a third search");
        assert_eq!(error, refused(Limit::SearchPerMinute, 60 * SECOND));
        limiter
            .acquire(&limiter.budget(&key("alice")), read(), 3, now)
            .await
            .expect("a plain read is not a search");
        let error = limiter
            .acquire(&limiter.budget(&key("alice")), read(), 3, now)
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
        let first = limiter
            .acquire(&alice, read(), 150, Instant::now() + SECOND)
            .await
            .expect("1st read");
        let _second = limiter
            .acquire(&alice, read(), 150, Instant::now() + SECOND)
            .await
            .expect("2nd read");
        let waiting = Instant::now();
        let error = limiter
            .acquire(&alice, read(), 150, waiting + SECOND)
            .await
            .expect_err("a third read in flight");
        assert_eq!(error, refused(Limit::ReadsInFlight, SECOND));
        assert_eq!(waiting.elapsed(), SECOND, "waited until the deadline");
        let write = limiter
            .acquire(&alice, Demand::of(RateClass::Write), 150, Instant::now())
            .await
            .expect("writes have their own pool");
        let error = limiter
            .acquire(
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
            limiter.acquire(&alice, read(), 150, waiting + 10 * SECOND),
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
        let permit = limiter
            .acquire(&alice, read(), 150, Instant::now())
            .await
            .expect("read");
        permit.back_off(5 * SECOND);
        permit.back_off(SECOND);
        drop(permit);
        let error = limiter
            .acquire(
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
        limiter
            .acquire(&limiter.budget(&key("bob")), read(), 150, Instant::now())
            .await
            .expect("another account does not wait");
        let waiting = Instant::now();
        limiter
            .acquire(&alice, read(), 150, waiting + 10 * SECOND)
            .await
            .expect("the back-off ends within the deadline");
        assert_eq!(waiting.elapsed(), 5 * SECOND);

        // A request that takes no slots (an MCP session's tools/list) waits out the back-off
        // too.
        let permit = limiter
            .acquire(&alice, read(), 150, Instant::now())
            .await
            .expect("free again");
        permit.back_off(3 * SECOND);
        drop(permit);
        let error = limiter
            .acquire(&alice, Demand::NONE, 150, Instant::now() + SECOND)
            .await
            .expect_err("backing off beyond the deadline");
        assert_eq!(error, refused(Limit::BackingOff, 3 * SECOND));
        limiter
            .acquire(
                &limiter.budget(&key("bob")),
                Demand::NONE,
                150,
                Instant::now(),
            )
            .await
            .expect("bob is not backing off");
        let waiting = Instant::now();
        limiter
            .acquire(&alice, Demand::NONE, 150, waiting + 10 * SECOND)
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
            let error = limiter
                .acquire(&alice, demand, per_minute, far)
                .await
                .expect_err("never fits");
            assert_eq!(error.limit, limit, "{demand:?}");
            assert!(error.retry_after > Duration::ZERO);
            assert_eq!(Instant::now(), start, "{demand:?} refused without waiting");
        }
        limiter
            .acquire(&alice, demand(2, 1, 2), 3, start)
            .await
            .expect("nothing was spent by the refusals");
    }
}
