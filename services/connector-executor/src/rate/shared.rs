//! The limiter shared by every replica, in Redis.
//!
//! An account's budget is five keys under one hash tag (so a Redis Cluster keeps them on one
//! node), named by a digest of the account, never by its identifier:
//!
//! - `…:r`, `…:w`: the reads and writes in flight, a sorted set of slot leases scored by when
//!   each expires. The replica holding a slot renews its lease every third of `lease`; a dead
//!   replica's slots expire with their leases.
//! - `…:m`, `…:s`: the requests and searches sent in the last minute, scored by when.
//! - `…:b`: until when the token backs off after a 429.
//!
//! [`ACQUIRE`] checks every limit and takes every slot a request needs in one step, or takes
//! nothing and says which limit refused and for how long; times are Redis's own (`TIME`), so
//! replicas' clocks need not agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{Bucket, BucketKey, Demand, Exhausted, Limit, Slots};
use crate::config::{OnOutage, SharedLimitsConfig};

/// Checks the back-off, the in-flight slots, the minute and the search windows, and takes
/// them all, or nothing. Answers `{0, 0}` when taken, else `{code, wait in ms}`: 1 backing
/// off, 2 reads in flight, 3 writes in flight (no wait known: a slot frees when a request
/// ends), 4 the minute's budget, 5 the minute's searches.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reads_limit, writes_limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local per_minute, search_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local reads, writes, searches = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local lease, id = tonumber(ARGV[8]), ARGV[9]
local backoff = tonumber(redis.call('GET', KEYS[5]) or '0')
if backoff > now then return {1, backoff - now} end
local function in_flight_fits(key, need, limit)
  if need == 0 then return true end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key) + need <= limit
end
if not in_flight_fits(KEYS[1], reads, reads_limit) then return {2, 0} end
if not in_flight_fits(KEYS[2], writes, writes_limit) then return {3, 0} end
local function window_wait(key, need, limit)
  if need == 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 60000)
  local over = redis.call('ZCARD', key) + need - limit
  if over <= 0 then return 0 end
  local oldest = redis.call('ZRANGE', key, over - 1, over - 1, 'WITHSCORES')
  if oldest[2] == nil then return 60000 end
  return math.max(tonumber(oldest[2]) + 60000 - now, 1)
end
local wait = window_wait(KEYS[3], reads + writes, per_minute)
if wait > 0 then return {4, wait} end
wait = window_wait(KEYS[4], searches, search_limit)
if wait > 0 then return {5, wait} end
local function take(key, need, score, tag, ttl)
  if need == 0 then return end
  for i = 1, need do redis.call('ZADD', key, score, id .. tag .. i) end
  redis.call('PEXPIRE', key, ttl)
end
take(KEYS[1], reads, now + lease, ':r', lease * 2)
take(KEYS[2], writes, now + lease, ':w', lease * 2)
take(KEYS[3], reads + writes, now, ':m', 61000)
take(KEYS[4], searches, now, ':s', 61000)
return {0, 0}
";

/// Extends the leases of a permit's slots that are still its own.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, id = tonumber(ARGV[1]), ARGV[2]
local function renew(key, need, tag)
  if need == 0 then return end
  for i = 1, need do redis.call('ZADD', key, 'XX', now + lease, id .. tag .. i) end
  redis.call('PEXPIRE', key, lease * 2)
end
renew(KEYS[1], tonumber(ARGV[3]), ':r')
renew(KEYS[2], tonumber(ARGV[4]), ':w')
return 0
";

/// Makes every replica wait `ARGV[1]` ms from now before sending for the token; a shorter
/// back-off never shortens a longer one.
const BACK_OFF: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + wait > current then redis.call('SET', KEYS[1], now + wait, 'PX', wait) end
return 0
";

/// How often a call waiting for an in-flight slot asks again, at most.
const POLL_CAP: Duration = Duration::from_millis(50);

/// The shared limiter: one Redis connection (multiplexed, reconnected when lost).
pub(super) struct Shared {
    connection: ConnectionManager,
    slots: Slots,
    lease: Duration,
    timeout: Duration,
    key_prefix: String,
    on_outage: OnOutage,
    replicas: u32,
    scripts: Arc<Scripts>,
    /// Whether the last call found Redis unreachable; said once per outage.
    down: AtomicBool,
}

struct Scripts {
    acquire: Script,
    renew: Script,
    back_off: Script,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("slots", &self.slots)
            .field("lease", &self.lease)
            .field("key_prefix", &self.key_prefix)
            .field("on_outage", &self.on_outage)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

/// An account's keys.
#[derive(Debug)]
pub(super) struct Keys {
    reads: String,
    writes: String,
    minute: String,
    searches: String,
    backoff: String,
}

/// Why the shared limiter did not admit a request.
#[derive(Debug)]
pub(super) enum Refused {
    Exhausted(Exhausted),
    /// Redis could not be asked.
    Down(String),
}

/// Slots taken in Redis; dropping it gives them back (or their leases expire).
pub(crate) struct SharedPermit {
    id: String,
    reads: u32,
    writes: u32,
    keys: Arc<Keys>,
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
    timeout: Duration,
    renewal: Option<AbortHandle>,
    /// This replica's bucket, which also keeps a back-off for an outage.
    local: Arc<Bucket>,
}

impl std::fmt::Debug for SharedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPermit")
            .field("reads", &self.reads)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A limiter on `config.url`, connected on first use: a replica starts while Redis is down.
    pub(super) fn new(config: &SharedLimitsConfig, slots: Slots) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|_| anyhow::anyhow!("[limits.shared] url is not a Redis URL"))?;
        let connection = ConnectionManager::new_lazy_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(1)
                .set_max_delay(config.timeout),
        )
        .map_err(|e| anyhow::anyhow!("[limits.shared]: {}", describe(&e)))?;
        Ok(Self {
            connection,
            slots,
            lease: config.lease,
            timeout: config.timeout,
            key_prefix: config.key_prefix.clone(),
            on_outage: config.on_outage,
            replicas: config.replicas,
            scripts: Arc::new(Scripts {
                acquire: Script::new(ACQUIRE),
                renew: Script::new(RENEW),
                back_off: Script::new(BACK_OFF),
            }),
            down: AtomicBool::new(false),
        })
    }

    pub(super) fn on_outage(&self) -> OnOutage {
        self.on_outage
    }

    pub(super) fn replicas(&self) -> u32 {
        self.replicas
    }

    /// The account's keys: a digest of the account under the configured prefix.
    pub(super) fn keys(&self, account: &BucketKey) -> Keys {
        let mut digest = Sha256::new();
        for part in [&account.tenant, &account.connection, &account.identifier] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        let digest = hex::encode(&digest.finalize()[..16]);
        let key = |suffix: &str| format!("{}:{{{digest}}}:{suffix}", self.key_prefix);
        Keys {
            reads: key("r"),
            writes: key("w"),
            minute: key("m"),
            searches: key("s"),
            backoff: key("b"),
        }
    }

    /// Waits until `demand` may be sent within `per_minute` on every replica's account, or
    /// fails at once when it could not be before `deadline`; [`Refused::Down`] when Redis
    /// cannot be asked.
    pub(super) async fn acquire(
        &self,
        keys: &Arc<Keys>,
        local: &Arc<Bucket>,
        demand: Demand,
        per_minute: u32,
        deadline: Instant,
    ) -> Result<SharedPermit, Refused> {
        self.slots
            .check(demand, per_minute)
            .map_err(Refused::Exhausted)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut poll = Duration::from_millis(2);
        loop {
            let mut invocation = self.scripts.acquire.key(&keys.reads);
            invocation
                .key(&keys.writes)
                .key(&keys.minute)
                .key(&keys.searches)
                .key(&keys.backoff)
                .arg(self.slots.reads_in_flight)
                .arg(self.slots.writes_in_flight)
                .arg(per_minute)
                .arg(self.slots.search_per_minute)
                .arg(demand.reads)
                .arg(demand.writes)
                .arg(demand.searches)
                .arg(millis(self.lease))
                .arg(&id);
            let mut connection = self.connection.clone();
            let answer = tokio::time::timeout(
                self.timeout,
                invocation.invoke_async::<(u8, u64)>(&mut connection),
            )
            .await;
            let (code, wait) = match answer {
                Ok(Ok(answer)) => {
                    self.reached();
                    answer
                }
                Ok(Err(error)) => return Err(self.unreachable(&describe(&error))),
                Err(_) => return Err(self.unreachable("no answer in time")),
            };
            let now = Instant::now();
            let limit = match code {
                0 => return Ok(self.permit(id, demand, keys, local)),
                1 => Limit::BackingOff,
                2 => Limit::ReadsInFlight,
                3 => Limit::WritesInFlight,
                4 => Limit::PerMinute,
                _ => Limit::SearchPerMinute,
            };
            if matches!(limit, Limit::ReadsInFlight | Limit::WritesInFlight) {
                // A slot frees when some replica's request ends: ask again soon, until the
                // deadline.
                if now >= deadline {
                    return Err(Refused::Exhausted(Exhausted::refused(
                        limit,
                        Duration::from_secs(1),
                    )));
                }
                tokio::time::sleep_until((now + poll).min(deadline)).await;
                poll = (poll * 2).min(POLL_CAP);
                continue;
            }
            let wait = Duration::from_millis(wait);
            if now + wait > deadline {
                return Err(Refused::Exhausted(Exhausted::refused(limit, wait)));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether Redis answers.
    pub(super) async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut connection)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(unreachable_reason(&describe(&error))),
            Err(_) => Err(unreachable_reason("no answer in time")),
        }
    }

    fn permit(
        &self,
        id: String,
        demand: Demand,
        keys: &Arc<Keys>,
        local: &Arc<Bucket>,
    ) -> SharedPermit {
        let mut permit = SharedPermit {
            id,
            reads: demand.reads,
            writes: demand.writes,
            keys: keys.clone(),
            connection: self.connection.clone(),
            scripts: self.scripts.clone(),
            timeout: self.timeout,
            renewal: None,
            local: local.clone(),
        };
        if demand.reads + demand.writes > 0 {
            permit.renewal = Some(permit.renew_every(self.lease));
        }
        permit
    }

    fn reached(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("the shared rate limiter (Redis) answers again");
        }
    }

    fn unreachable(&self, reason: &str) -> Refused {
        let reason = unreachable_reason(reason);
        if !self.down.swap(true, Ordering::Relaxed) {
            match self.on_outage {
                OnOutage::FailClosed => {
                    tracing::error!(%reason, "calls are refused until it answers (on_outage = fail_closed)");
                }
                OnOutage::ReplicaShare => tracing::warn!(
                    %reason,
                    replicas = self.replicas,
                    "this replica spends its share of each budget until it answers (on_outage = replica_share)"
                ),
            }
        }
        Refused::Down(reason)
    }
}

/// What went wrong, in words that never carry the URL (which may hold a password).
fn describe(error: &redis::RedisError) -> String {
    if error.is_connection_refusal() {
        "connection refused".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connection_dropped() || error.is_io_error() {
        "connection lost".to_owned()
    } else {
        format!("{:?}", error.kind())
    }
}

fn unreachable_reason(why: &str) -> String {
    format!("the shared rate limiter (Redis) cannot be reached: {why}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl SharedPermit {
    /// Every replica waits `retry_after` before sending for this token; this replica's bucket
    /// remembers it too, for an outage of Redis.
    pub(super) async fn back_off(&self, retry_after: Duration) {
        self.local.back_off(retry_after);
        let mut invocation = self.scripts.back_off.key(&self.keys.backoff);
        invocation.arg(millis(retry_after).max(1));
        let mut connection = self.connection.clone();
        let sent =
            tokio::time::timeout(self.timeout, invocation.invoke_async::<u8>(&mut connection))
                .await;
        if !matches!(sent, Ok(Ok(_))) {
            tracing::warn!(
                "Asana's Retry-After is kept by this replica only: Redis did not take it"
            );
        }
    }

    /// Renews the slots' leases every third of `lease` while the permit is held.
    fn renew_every(&self, lease: Duration) -> AbortHandle {
        let scripts = self.scripts.clone();
        let keys = self.keys.clone();
        let (id, reads, writes) = (self.id.clone(), self.reads, self.writes);
        let mut connection = self.connection.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let mut invocation = scripts.renew.key(&keys.reads);
                invocation
                    .key(&keys.writes)
                    .arg(millis(lease))
                    .arg(&id)
                    .arg(reads)
                    .arg(writes);
                if let Err(error) = invocation.invoke_async::<u8>(&mut connection).await {
                    tracing::debug!(reason = %describe(&error), "a slot lease was not renewed");
                }
            }
        })
        .abort_handle()
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if self.reads + self.writes == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let members = |tag: &str, count: u32| -> Vec<String> {
            (1..=count)
                .map(|i| format!("{}:{tag}{i}", self.id))
                .collect()
        };
        let mut release = redis::pipe();
        if self.reads > 0 {
            release
                .zrem(&self.keys.reads, members("r", self.reads))
                .ignore();
        }
        if self.writes > 0 {
            release
                .zrem(&self.keys.writes, members("w", self.writes))
                .ignore();
        }
        let mut connection = self.connection.clone();
        let timeout = self.timeout;
        runtime.spawn(async move {
            // Unreleased, the slots free when their leases expire.
            let _ = tokio::time::timeout(timeout, release.query_async::<()>(&mut connection)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use agentauth_testkit::redis::{RedisServer, fresh_prefix, shared_url};
    use asana_tools::RateClass;
    use tokio::time::Instant;

    use crate::config::{LimitsConfig, OnOutage, SharedLimitsConfig};
    use crate::rate::{BucketKey, Demand, Exhausted, Limit, Limiter, Permit, Refusal};

    const SECOND: Duration = Duration::from_secs(1);

    fn key(identifier: &str) -> BucketKey {
        BucketKey {
            tenant: "acme".to_owned(),
            connection: "asana-pat".to_owned(),
            identifier: identifier.to_owned(),
        }
    }

    /// A replica's limiter: two reads and one write in flight, two searches a minute, shared
    /// on `url` under `prefix`.
    fn replica(url: &str, prefix: &str, lease: Duration, on_outage: OnOutage) -> Limiter {
        Limiter::new(&LimitsConfig {
            reads_in_flight: 2,
            writes_in_flight: 1,
            search_per_minute: 2,
            max_wait: 10 * SECOND,
            shared: Some(SharedLimitsConfig {
                url: url.to_owned(),
                on_outage,
                replicas: 2,
                lease,
                timeout: Duration::from_millis(300),
                key_prefix: prefix.to_owned(),
            }),
        })
        .expect("limiter")
    }

    fn pair(lease: Duration) -> (Limiter, Limiter) {
        let prefix = fresh_prefix();
        let url = shared_url();
        (
            replica(&url, &prefix, lease, OnOutage::FailClosed),
            replica(&url, &prefix, lease, OnOutage::FailClosed),
        )
    }

    fn read() -> Demand {
        Demand::of(RateClass::Read)
    }

    async fn acquire(
        limiter: &Limiter,
        identifier: &str,
        demand: Demand,
        per_minute: u32,
        within: Duration,
    ) -> Result<Permit, Refusal> {
        let budget = limiter.budget(&key(identifier));
        limiter
            .acquire(&budget, demand, per_minute, Instant::now() + within)
            .await
    }

    fn exhausted(result: Result<Permit, Refusal>) -> Exhausted {
        match result {
            Err(Refusal::Exhausted(exhausted)) => exhausted,
            other => panic!("want a limit's refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn replicas_spend_one_minute_budget_and_wait_out_one_back_off() {
        let (a, b) = pair(30 * SECOND);
        for limiter in [&a, &a, &b] {
            acquire(limiter, "alice", read(), 3, SECOND)
                .await
                .expect("three a minute, on either replica");
        }
        let refused = exhausted(acquire(&b, "alice", read(), 3, 10 * SECOND).await);
        assert_eq!(refused.limit, Limit::PerMinute);
        assert!(
            refused.retry_after > 55 * SECOND && refused.retry_after <= 60 * SECOND,
            "when the first of the minute leaves the window: {refused:?}"
        );
        let refused = exhausted(acquire(&a, "alice", read(), 3, SECOND).await);
        assert_eq!(refused.limit, Limit::PerMinute, "replica a saw b's request");
        acquire(&a, "bob", read(), 3, SECOND)
            .await
            .expect("bob's budget is his own");

        let permit = acquire(&a, "carol", read(), 150, SECOND)
            .await
            .expect("carol");
        permit.back_off(2 * SECOND).await;
        permit.back_off(SECOND).await;
        drop(permit);
        let refused = exhausted(acquire(&b, "carol", Demand::NONE, 150, SECOND).await);
        assert_eq!(
            refused.limit,
            Limit::BackingOff,
            "the other replica backs off too"
        );
        assert!(
            refused.retry_after > SECOND && refused.retry_after <= 2 * SECOND,
            "a shorter Retry-After never shortens a longer one: {refused:?}"
        );
        let waiting = std::time::Instant::now();
        acquire(&b, "carol", read(), 150, 5 * SECOND)
            .await
            .expect("the back-off ends within the deadline");
        assert!(
            waiting.elapsed() > SECOND,
            "waited it out: {:?}",
            waiting.elapsed()
        );

        let mut connection = redis::Client::open(shared_url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let prefix = format!("{}*", a.shared.as_ref().expect("shared").key_prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&prefix)
            .query_async(&mut connection)
            .await
            .expect("KEYS");
        assert!(!keys.is_empty());
        for key in &keys {
            for name in ["acme", "asana-pat", "alice", "bob", "carol"] {
                assert!(!key.contains(name), "{key} names the account");
            }
        }
    }

    #[tokio::test]
    async fn in_flight_slots_are_held_across_replicas_and_freed_when_a_request_ends() {
        let (a, b) = pair(30 * SECOND);
        let first = acquire(&a, "alice", read(), 150, SECOND)
            .await
            .expect("1st");
        let _second = acquire(&b, "alice", read(), 150, SECOND)
            .await
            .expect("2nd");
        let waiting = std::time::Instant::now();
        let refused =
            exhausted(acquire(&a, "alice", read(), 150, Duration::from_millis(300)).await);
        assert_eq!(refused.limit, Limit::ReadsInFlight);
        assert!(
            waiting.elapsed() >= Duration::from_millis(300),
            "waited until the deadline"
        );
        let _write = acquire(&b, "alice", Demand::of(RateClass::Write), 150, SECOND)
            .await
            .expect("writes have their own slots");

        let (third, ()) = tokio::join!(acquire(&b, "alice", read(), 150, 5 * SECOND), async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(first);
        });
        third.expect("the slot replica a freed");
    }

    #[tokio::test]
    async fn a_dead_replicas_slots_free_when_their_leases_expire_and_a_live_ones_do_not() {
        let lease = SECOND;
        let prefix = fresh_prefix();
        // Replica a takes both read slots and dies: its runtime ends, and with it the renewals,
        // without giving anything back.
        let dead_prefix = prefix.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let a = replica(&shared_url(), &dead_prefix, lease, OnOutage::FailClosed);
                for _ in 0..2 {
                    let permit = acquire(&a, "alice", read(), 150, SECOND)
                        .await
                        .expect("slot");
                    std::mem::forget(permit);
                }
            });
        })
        .join()
        .expect("replica a");
        let b = replica(&shared_url(), &prefix, lease, OnOutage::FailClosed);
        let refused =
            exhausted(acquire(&b, "alice", read(), 150, Duration::from_millis(200)).await);
        assert_eq!(
            refused.limit,
            Limit::ReadsInFlight,
            "the dead replica's slots are taken"
        );
        let waiting = std::time::Instant::now();
        let held = acquire(&b, "alice", read(), 150, 3 * SECOND)
            .await
            .expect("a lease expired");
        assert!(waiting.elapsed() < 2 * lease, "{:?}", waiting.elapsed());
        let _also = acquire(&b, "alice", read(), 150, 3 * SECOND)
            .await
            .expect("the other");

        // b is alive: its leases are renewed past their first expiry.
        let c = replica(&shared_url(), &prefix, lease, OnOutage::FailClosed);
        let refused = exhausted(acquire(&c, "alice", read(), 150, 3 * lease).await);
        assert_eq!(refused.limit, Limit::ReadsInFlight, "renewed, still held");
        drop(held);
        acquire(&c, "alice", read(), 150, SECOND)
            .await
            .expect("given back when its request ended");
    }

    #[tokio::test]
    async fn while_redis_is_down_calls_fail_closed_or_spend_the_replicas_share() {
        let mut redis = RedisServer::start().await.expect("redis-server");
        let prefix = fresh_prefix();
        let closed = replica(&redis.url(), &prefix, 30 * SECOND, OnOutage::FailClosed);
        let share = replica(&redis.url(), &prefix, 30 * SECOND, OnOutage::ReplicaShare);
        acquire(&closed, "alice", read(), 4, SECOND)
            .await
            .expect("Redis answers");
        closed.check().await.expect("ready");

        redis.stop().await.expect("stop");
        let started = std::time::Instant::now();
        match acquire(&closed, "alice", read(), 4, 5 * SECOND).await {
            Err(Refusal::Unavailable(reason)) => {
                assert!(reason.contains("Redis"), "{reason}");
                assert!(!reason.contains(&redis.url()), "{reason}");
            }
            other => panic!("fail closed: {other:?}"),
        }
        assert!(
            started.elapsed() < 2 * SECOND,
            "at once: {:?}",
            started.elapsed()
        );
        assert!(
            closed.check().await.is_err(),
            "not ready while it fails closed"
        );

        // Two replicas: this one spends half of the 4 a minute, and of the 2 reads in flight.
        share
            .check()
            .await
            .expect("a replica with its share stays ready");
        let first = acquire(&share, "alice", read(), 4, SECOND)
            .await
            .expect("1 of 2");
        let refused =
            exhausted(acquire(&share, "alice", read(), 4, Duration::from_millis(100)).await);
        assert_eq!(
            refused.limit,
            Limit::ReadsInFlight,
            "one read in flight is its share"
        );
        drop(first);
        acquire(&share, "alice", read(), 4, SECOND)
            .await
            .expect("2 of 2");
        let refused = exhausted(acquire(&share, "alice", read(), 4, SECOND).await);
        assert_eq!(refused.limit, Limit::PerMinute, "two a minute is its share");

        redis.start_again().await.expect("restart");
        agentauth_testkit::assert_eventually!(
            Duration::from_secs(10),
            async { acquire(&closed, "alice", read(), 4, SECOND).await.is_ok() },
            "calls admitted again once Redis answers"
        );
        closed.check().await.expect("ready again");
    }
}
