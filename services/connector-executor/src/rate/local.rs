//! The in-process limiter: one replica's buckets, one per account (the single-replica default,
//! and each replica's share of the budget while the shared limiter cannot be reached).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{BucketKey, Demand, Exhausted, Limit, MINUTE, Slots};

/// The limiter: one bucket per account.
#[derive(Debug)]
pub(super) struct Local {
    slots: Slots,
    buckets: Mutex<HashMap<BucketKey, Arc<Bucket>>>,
}

#[derive(Debug)]
pub(super) struct Bucket {
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
pub(crate) struct LocalPermit {
    _reads: Option<OwnedSemaphorePermit>,
    _writes: Option<OwnedSemaphorePermit>,
    pub(super) bucket: Arc<Bucket>,
}

impl Bucket {
    /// Asana answered 429: every request of this token waits `retry_after` (from now).
    pub(super) fn back_off(&self, retry_after: Duration) {
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

impl Local {
    pub(super) fn new(slots: Slots) -> Self {
        Self {
            slots,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The account's bucket, looked up once per call.
    pub(super) fn bucket(&self, key: &BucketKey) -> Arc<Bucket> {
        let mut buckets = lock(&self.buckets);
        if let Some(bucket) = buckets.get(key) {
            return bucket.clone();
        }
        let bucket = Arc::new(Bucket {
            reads: Arc::new(Semaphore::new(self.slots.reads_in_flight as usize)),
            writes: Arc::new(Semaphore::new(self.slots.writes_in_flight as usize)),
            windows: Mutex::new(Windows::default()),
        });
        buckets.insert(key.clone(), bucket.clone());
        bucket
    }

    /// Waits until `demand` may be sent from `bucket` within `per_minute`, or fails at once when
    /// it could not be before `deadline`.
    pub(super) async fn acquire(
        &self,
        bucket: &Arc<Bucket>,
        demand: Demand,
        per_minute: u32,
        deadline: Instant,
    ) -> Result<LocalPermit, Exhausted> {
        self.slots.check(demand, per_minute)?;
        let bucket = bucket.clone();
        let slots = |semaphore: &Arc<Semaphore>, count: u32, limit| {
            let semaphore = semaphore.clone();
            async move {
                if count == 0 {
                    return Ok(None);
                }
                match tokio::time::timeout_at(deadline, semaphore.acquire_many_owned(count)).await {
                    Ok(Ok(permit)) => Ok(Some(permit)),
                    _ => Err(Exhausted::refused(limit, Duration::from_secs(1))),
                }
            }
        };
        let reads = slots(&bucket.reads, demand.reads, Limit::ReadsInFlight).await?;
        let writes = slots(&bucket.writes, demand.writes, Limit::WritesInFlight).await?;
        loop {
            let now = Instant::now();
            let wait_until = {
                let mut windows = lock(&bucket.windows);
                match windows.next_slot(now, demand, per_minute, self.slots.search_per_minute) {
                    None => {
                        windows.take(now, demand);
                        None
                    }
                    Some(slot) => Some(slot),
                }
            };
            match wait_until {
                None => {
                    return Ok(LocalPermit {
                        _reads: reads,
                        _writes: writes,
                        bucket,
                    });
                }
                Some((at, limit)) if at > deadline => {
                    return Err(Exhausted::refused(limit, at - now));
                }
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
