//! What the benchmarks share: latency percentiles and the CPU time a process has used.

use std::time::Duration;

/// Latency figures of a run.
#[derive(Debug, Clone, Copy)]
pub struct Latencies {
    pub p50: Duration,
    pub p99: Duration,
}

impl Latencies {
    /// The percentiles of `samples` (sorted here); zero when there are none.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        Self {
            p50: percentile(samples, 0.50),
            p99: percentile(samples, 0.99),
        }
    }
}

/// The `p` (0 to 1) percentile of `sorted` by nearest rank; zero when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Every call's latency, from `concurrency` tasks that each keep making `call` for `run`.
pub async fn keep_calling<F, Fut>(concurrency: usize, run: Duration, call: F) -> Vec<Duration>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = std::time::Instant::now() + run;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while std::time::Instant::now() < deadline {
                    let started = std::time::Instant::now();
                    call().await;
                    samples.push(started.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("a calling task"));
    }
    all
}

/// Interleaved rounds of `paths` ways of doing one thing: in each of `rounds` rounds every path
/// in turn (the order rotated each round, so none always goes first) runs for `warmup`, then
/// for `round` measured. `run(path, how_long)` gives every call's latency and the time it took.
/// Per path: calls per second over all its measured rounds, and their latencies.
pub async fn interleaved<F, Fut>(
    paths: usize,
    rounds: usize,
    warmup: Duration,
    round: Duration,
    run: F,
) -> Vec<(f64, Latencies)>
where
    F: Fn(usize, Duration) -> Fut,
    Fut: std::future::Future<Output = (Vec<Duration>, Duration)>,
{
    let mut samples: Vec<(Vec<Duration>, Duration)> =
        (0..paths).map(|_| (Vec::new(), Duration::ZERO)).collect();
    for r in 0..rounds {
        for step in 0..paths {
            let index = (step + r) % paths;
            run(index, warmup).await;
            let (calls, elapsed) = run(index, round).await;
            samples[index].0.extend(calls);
            samples[index].1 += elapsed;
        }
    }
    samples
        .into_iter()
        .map(|(mut calls, elapsed)| {
            (
                calls.len() as f64 / elapsed.as_secs_f64(),
                Latencies::of(&mut calls),
            )
        })
        .collect()
}

/// `d` in microseconds.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `d` in milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The CPU time (user and system) process `pid` has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat has no command name"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat is short"))?
            .parse()?)
    };
    let total = ticks(11)? + ticks(12)?;
    // Linux reports these in USER_HZ, 100 on every architecture it exports to user space.
    Ok(Duration::from_millis(total * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let figures = Latencies::of(&mut samples);
        assert_eq!(figures.p50, Duration::from_millis(51));
        assert_eq!(figures.p99, Duration::from_millis(99));
        assert_eq!(Latencies::of(&mut []).p99, Duration::ZERO);
    }

    #[test]
    fn this_process_has_used_cpu() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let used = cpu_time(std::process::id()).expect("readable");
        assert!(used >= Duration::from_millis(20), "{used:?}");
    }
}
