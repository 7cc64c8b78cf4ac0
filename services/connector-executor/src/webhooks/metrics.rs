//! The intake's and the event streams' counters, served as Prometheus text at `GET /metrics`
//! on the intake's listener (route only `/webhooks/` through a public Ingress).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the delivery-lag histogram's buckets.
const LAG_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// Why the intake refused a request, as the `reason` label says it.
pub(crate) const REFUSALS: [&str; 5] = [
    "unknown_subscription",
    "handshake_refused",
    "bad_signature",
    "malformed",
    "unavailable",
];

/// Counters since this process started.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    handshakes: AtomicU64,
    deliveries: AtomicU64,
    heartbeats: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    backfilled: AtomicU64,
    refused: [AtomicU64; REFUSALS.len()],
    lag_buckets: [AtomicU64; LAG_BUCKETS.len()],
    lag_count: AtomicU64,
    lag_sum_us: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn handshake(&self) {
        add(&self.handshakes, 1);
    }

    pub(crate) fn heartbeat(&self) {
        add(&self.heartbeats, 1);
    }

    /// A delivery of `received` events, `stored` of them new.
    pub(crate) fn delivery(&self, received: u64, stored: u64) {
        add(&self.deliveries, 1);
        add(&self.stored, stored);
        add(&self.duplicates, received.saturating_sub(stored));
    }

    pub(crate) fn backfilled(&self, stored: u64) {
        add(&self.backfilled, stored);
    }

    /// A refusal, by its index in [`REFUSALS`].
    pub(crate) fn refused(&self, reason: usize) {
        if let Some(counter) = self.refused.get(reason) {
            add(counter, 1);
        }
    }

    /// How long an event waited between being stored and being sent on a stream.
    pub(crate) fn lag(&self, lag: Duration) {
        let seconds = lag.as_secs_f64();
        for (bound, bucket) in LAG_BUCKETS.iter().zip(&self.lag_buckets) {
            if seconds <= *bound {
                add(bucket, 1);
            }
        }
        add(&self.lag_count, 1);
        add(
            &self.lag_sum_us,
            u64::try_from(lag.as_micros()).unwrap_or(u64::MAX),
        );
    }

    /// The Prometheus text exposition of every counter.
    pub(crate) fn render(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut text = String::new();
        for (name, help, counter) in [
            ("handshakes", "Webhook handshakes taken.", &self.handshakes),
            (
                "deliveries",
                "Verified deliveries with events, stored before they were answered.",
                &self.deliveries,
            ),
            ("heartbeats", "Verified heartbeats.", &self.heartbeats),
            ("events_stored", "Delivered events stored.", &self.stored),
            (
                "events_duplicate",
                "Delivered events already stored (redeliveries).",
                &self.duplicates,
            ),
            (
                "events_backfilled",
                "Events the webhook missed, stored from Asana's events API.",
                &self.backfilled,
            ),
        ] {
            let _ = write!(
                text,
                "# HELP agentauth_webhook_{name}_total {help}\n# TYPE agentauth_webhook_{name}_total counter\nagentauth_webhook_{name}_total {}\n",
                get(counter)
            );
        }
        text.push_str("# HELP agentauth_webhook_refused_total Intake requests refused, by reason; none changed anything.\n# TYPE agentauth_webhook_refused_total counter\n");
        for (reason, counter) in REFUSALS.iter().zip(&self.refused) {
            let _ = writeln!(
                text,
                "agentauth_webhook_refused_total{{reason=\"{reason}\"}} {}",
                get(counter)
            );
        }
        text.push_str("# HELP agentauth_webhook_delivery_lag_seconds From an event's storage to its sending on a SubscribeEvents stream.\n# TYPE agentauth_webhook_delivery_lag_seconds histogram\n");
        for (bound, bucket) in LAG_BUCKETS.iter().zip(&self.lag_buckets) {
            let _ = writeln!(
                text,
                "agentauth_webhook_delivery_lag_seconds_bucket{{le=\"{bound}\"}} {}",
                get(bucket)
            );
        }
        let count = get(&self.lag_count);
        let _ = write!(
            text,
            "agentauth_webhook_delivery_lag_seconds_bucket{{le=\"+Inf\"}} {count}\nagentauth_webhook_delivery_lag_seconds_sum {}\nagentauth_webhook_delivery_lag_seconds_count {count}\n",
            get(&self.lag_sum_us) as f64 / 1e6
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_the_lag_histogram_are_rendered_cumulatively() {
        let metrics = Metrics::default();
        metrics.delivery(3, 2);
        metrics.refused(2);
        metrics.lag(Duration::from_millis(3));
        metrics.lag(Duration::from_secs(2));
        let text = metrics.render();
        for line in [
            "agentauth_webhook_deliveries_total 1",
            "agentauth_webhook_events_stored_total 2",
            "agentauth_webhook_events_duplicate_total 1",
            "agentauth_webhook_refused_total{reason=\"bad_signature\"} 1",
            "agentauth_webhook_refused_total{reason=\"malformed\"} 0",
            "agentauth_webhook_delivery_lag_seconds_bucket{le=\"0.001\"} 0",
            "agentauth_webhook_delivery_lag_seconds_bucket{le=\"0.005\"} 1",
            "agentauth_webhook_delivery_lag_seconds_bucket{le=\"5\"} 2",
            "agentauth_webhook_delivery_lag_seconds_bucket{le=\"+Inf\"} 2",
            "agentauth_webhook_delivery_lag_seconds_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
