use std::time::Duration;

use serde::Deserialize;

/// How a [`Client`](crate::Client) reaches Asana and when it retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The API base every path is relative to, e.g. `https://app.asana.com/api/1.0`.
    pub base_url: String,
    /// The limit for one attempt, from connecting to the last byte of the body.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after the first attempt, for requests that are safe to repeat.
    pub max_retries: u32,
    /// The first backoff delay; each retry doubles it, up to `backoff_cap`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// The most one call may spend waiting between attempts (backoff and `Retry-After`
    /// together). A `Retry-After` longer than what is left fails at once with
    /// [`Error::RateLimited`](crate::Error::RateLimited).
    #[serde(with = "humantime_serde")]
    pub max_retry_wait: Duration,
    /// Whether a 429 on a request that is safe to repeat is waited out and retried here. A
    /// caller that paces requests per token itself (connector-executor) turns this off and
    /// gets [`Error::RateLimited`](crate::Error::RateLimited) at once.
    pub retry_rate_limited: bool,
    /// The largest response body read; a longer one fails with
    /// [`Error::InvalidResponse`](crate::Error::InvalidResponse) and is not read further.
    pub max_response_bytes: usize,
    /// Changes opted into on every request (`Asana-Enable`).
    pub asana_enable: Vec<String>,
    /// Changes opted out of on every request (`Asana-Disable`).
    pub asana_disable: Vec<String>,
    pub user_agent: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base_url: "https://app.asana.com/api/1.0".to_owned(),
            timeout: Duration::from_secs(30),
            max_retries: 5,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            max_retry_wait: Duration::from_secs(60),
            retry_rate_limited: true,
            max_response_bytes: 16 * 1024 * 1024,
            asana_enable: Vec::new(),
            asana_disable: Vec::new(),
            user_agent: concat!("agentauth-asana-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}
