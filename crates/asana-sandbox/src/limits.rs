//! Asana's limits, per token: a per-minute budget (150 free, 1,500 paid), at most 50 reads and
//! 15 writes in flight, search at 60 per minute. Rejected requests still count, as at Asana.
//! Counters are kept so tests can prove a client never exceeded a limit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

const WINDOW: Duration = Duration::from_secs(60);

/// The limits in force.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    pub free_per_minute: usize,
    pub paid_per_minute: usize,
    pub max_reads_in_flight: u32,
    pub max_writes_in_flight: u32,
    pub search_per_minute: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            free_per_minute: 150,
            paid_per_minute: 1_500,
            max_reads_in_flight: 50,
            max_writes_in_flight: 15,
            search_per_minute: 60,
        }
    }
}

impl LimitConfig {
    /// No limit at all: for benchmarks that measure a call, not its budget.
    pub fn unlimited() -> Self {
        Self {
            free_per_minute: usize::MAX,
            paid_per_minute: usize::MAX,
            max_reads_in_flight: u32::MAX,
            max_writes_in_flight: u32::MAX,
            search_per_minute: usize::MAX,
        }
    }
}

#[derive(Debug, Default)]
struct TokenState {
    window: VecDeque<Instant>,
    search_window: VecDeque<Instant>,
    reads: u32,
    writes: u32,
    peak_reads: u32,
    peak_writes: u32,
    requests: u64,
    rate_limited: u64,
    refreshes: u64,
}

/// The limiter and its counters.
#[derive(Debug, Clone)]
pub struct Limits {
    config: Arc<Mutex<LimitConfig>>,
    tokens: Arc<Mutex<HashMap<String, TokenState>>>,
}

/// One admitted request; dropping it frees its in-flight slot.
#[derive(Debug)]
pub struct Permit {
    tokens: Arc<Mutex<HashMap<String, TokenState>>>,
    key: String,
    write: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(state) = lock(&self.tokens).get_mut(&self.key) {
            if self.write {
                state.writes = state.writes.saturating_sub(1);
            } else {
                state.reads = state.reads.saturating_sub(1);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn trim(window: &mut VecDeque<Instant>, now: Instant) {
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        window.pop_front();
    }
}

/// Whole seconds until the oldest entry leaves the window.
fn retry_after(window: &VecDeque<Instant>, now: Instant) -> u64 {
    window
        .front()
        .map(|t| (WINDOW.saturating_sub(now.duration_since(*t))).as_secs() + 1)
        .unwrap_or(1)
}

impl Limits {
    pub fn new(config: LimitConfig) -> Self {
        Self {
            config: Arc::new(Mutex::new(config)),
            tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Replaces the limits (control API).
    pub fn configure(&self, config: LimitConfig) {
        *lock(&self.config) = config;
    }

    /// Admits one request of token `key`, or answers 429 with `Retry-After`.
    pub fn admit(
        &self,
        key: &str,
        write: bool,
        search: bool,
        paid: bool,
    ) -> Result<Permit, ApiError> {
        let config = lock(&self.config).clone();
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        let state = tokens.entry(key.to_owned()).or_default();
        state.requests += 1;
        trim(&mut state.window, now);
        state.window.push_back(now);
        let budget = if paid {
            config.paid_per_minute
        } else {
            config.free_per_minute
        };
        let refusal = if state.window.len() > budget {
            Some(retry_after(&state.window, now))
        } else if search && {
            trim(&mut state.search_window, now);
            state.search_window.push_back(now);
            state.search_window.len() > config.search_per_minute
        } {
            Some(retry_after(&state.search_window, now))
        } else if write && state.writes >= config.max_writes_in_flight
            || !write && state.reads >= config.max_reads_in_flight
        {
            Some(1)
        } else {
            None
        };
        if let Some(seconds) = refusal {
            state.rate_limited += 1;
            return Err(ApiError::rate_limited(seconds));
        }
        if write {
            state.writes += 1;
            state.peak_writes = state.peak_writes.max(state.writes);
        } else {
            state.reads += 1;
            state.peak_reads = state.peak_reads.max(state.reads);
        }
        Ok(Permit {
            tokens: self.tokens.clone(),
            key: key.to_owned(),
            write,
        })
    }

    /// Counts a refresh served for the token family `key` (the refresh token's key).
    pub fn count_refresh(&self, key: &str) {
        lock(&self.tokens)
            .entry(key.to_owned())
            .or_default()
            .refreshes += 1;
    }

    /// Per-token counters, keyed by the token's non-secret key.
    pub fn stats(&self) -> Value {
        let now = Instant::now();
        let tokens = lock(&self.tokens);
        let per_token: serde_json::Map<String, Value> = tokens
            .iter()
            .map(|(key, s)| {
                let last_minute = s
                    .window
                    .iter()
                    .filter(|t| now.duration_since(**t) < WINDOW)
                    .count();
                (
                    key.clone(),
                    json!({
                        "peak_in_flight_reads": s.peak_reads,
                        "peak_in_flight_writes": s.peak_writes,
                        "in_flight_reads": s.reads,
                        "in_flight_writes": s.writes,
                        "requests_last_minute": last_minute,
                        "requests_total": s.requests,
                        "rate_limited": s.rate_limited,
                        "refreshes": s.refreshes,
                    }),
                )
            })
            .collect();
        let total_refreshes: u64 = tokens.values().map(|s| s.refreshes).sum();
        json!({"tokens": per_token, "refreshes_total": total_refreshes})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(LimitConfig {
            free_per_minute: 5,
            max_writes_in_flight: 2,
            search_per_minute: 2,
            ..LimitConfig::default()
        })
    }

    #[test]
    fn minute_budget_counts_rejected_requests_too() {
        let limits = limits();
        for _ in 0..5 {
            drop(
                limits
                    .admit("t", false, false, false)
                    .expect("within budget"),
            );
        }
        let refused = limits
            .admit("t", false, false, false)
            .expect_err("over budget");
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some_and(|s| (1..=60).contains(&s)));
        assert!(
            limits.admit("other", false, false, false).is_ok(),
            "limits are per token"
        );
        assert!(
            limits.admit("t", false, false, true).is_ok(),
            "a paid domain has more"
        );
    }

    #[test]
    fn writes_in_flight_are_capped_and_freed() {
        let limits = limits();
        let a = limits.admit("t", true, false, true).expect("1");
        let _b = limits.admit("t", true, false, true).expect("2");
        assert!(
            limits.admit("t", true, false, true).is_err(),
            "third concurrent write"
        );
        assert!(
            limits.admit("t", false, false, true).is_ok(),
            "reads have their own pool"
        );
        drop(a);
        assert!(
            limits.admit("t", true, false, true).is_ok(),
            "a slot frees on drop"
        );
        assert_eq!(limits.stats()["tokens"]["t"]["peak_in_flight_writes"], 2);
    }

    #[test]
    fn search_has_its_own_minute_budget() {
        let limits = limits();
        assert!(limits.admit("t", false, true, true).is_ok());
        assert!(limits.admit("t", false, true, true).is_ok());
        assert!(limits.admit("t", false, true, true).is_err());
    }
}
