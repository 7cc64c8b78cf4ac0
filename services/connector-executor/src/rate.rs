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

/// Whose budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BucketKey {
    pub tenant: String,
    pub connection: String,
    pub identifier: String,
}

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
        let until = Instant::now() + retry_after;
        let mut windows = lock(&self.bucket.windows);
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

    fn bucket(&self, key: &BucketKey) -> Arc<Bucket> {
        let mut buckets = lock(&self.buckets);
        if let Some(bucket) = buckets.get(key) {
            return bucket.clone();
        }
        let bucket = Arc::new(Bucket {
            reads: Arc::new(Semaphore::new(self.config.reads_in_flight as usize)),
            writes: Arc::new(Semaphore::new(self.config.writes_in_flight as usize)),
            windows: Mutex::new(Windows::default()),
        });
        buckets.insert(key.clone(), bucket.clone());
        bucket
    }

    /// Waits until `demand` may be sent for `key` within `per_minute`, or fails at once when it
    /// could not be before `deadline`.
    pub(crate) async fn acquire(
        &self,
        key: &BucketKey,
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
        let bucket = self.bucket(key);
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
