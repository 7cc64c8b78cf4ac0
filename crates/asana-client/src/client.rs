use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{Instrument, warn};

use crate::error::Envelope;
use crate::raw::{RawRequest, RawResponse};
use crate::request::check_path;
use crate::{AsanaChange, Config, Error, ErrorDetail, NextPage, Request, Response, Token};

const ASANA_CHANGE: &str = "asana-change";
const ASANA_ENABLE: &str = "asana-enable";
const ASANA_DISABLE: &str = "asana-disable";
const REQUEST_ID: &str = "x-request-id";
/// The page size [`Client::pages`] asks for when the request names none.
const DEFAULT_PAGE_SIZE: &str = "100";

/// An Asana REST client; cheap to clone (clones share the connection pool and the
/// `Asana-Change` counters).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: Config,
    base: Url,
    /// `Asana-Enable` / `Asana-Disable`, sent on every request.
    headers: HeaderMap,
    /// How often each `Asana-Change` name was seen.
    changes: Mutex<HashMap<String, u64>>,
}

/// Why an attempt failed, and whether another may follow.
enum Failure {
    /// Not worth repeating.
    Final(Error),
    RateLimited {
        retry_after: Option<Duration>,
        errors: Vec<ErrorDetail>,
    },
    /// A 500/502/503/504, a connection error or a timeout.
    Transient {
        status: Option<u16>,
        errors: Vec<ErrorDetail>,
        reason: String,
    },
}

#[derive(Deserialize)]
struct Envelope200<T> {
    data: T,
    #[serde(default)]
    next_page: Option<NextPage>,
}

impl Client {
    /// Checks `config` and builds the HTTP client; fails on a base URL or header value that
    /// cannot work.
    pub fn new(config: Config) -> Result<Self, Error> {
        let invalid = |why: String| Error::InvalidConfig(why);
        let base = Url::parse(config.base_url.trim_end_matches('/'))
            .map_err(|e| invalid(format!("base_url: {e}")))?;
        if !matches!(base.scheme(), "http" | "https")
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(invalid(
                "base_url must be an http(s) URL without query or fragment".to_owned(),
            ));
        }
        if config.backoff_base > config.backoff_cap {
            return Err(invalid("backoff_base exceeds backoff_cap".to_owned()));
        }
        let mut headers = HeaderMap::new();
        for (name, changes) in [
            (ASANA_ENABLE, &config.asana_enable),
            (ASANA_DISABLE, &config.asana_disable),
        ] {
            if changes.is_empty() {
                continue;
            }
            if changes.iter().any(|c| c.is_empty() || c.contains(',')) {
                return Err(invalid(format!(
                    "{name}: empty change name or a comma in one"
                )));
            }
            let value = HeaderValue::from_str(&changes.join(","))
                .map_err(|e| invalid(format!("{name}: {e}")))?;
            headers.insert(HeaderName::from_static(name), value);
        }
        // No redirects: one to another host would carry the bearer token there.
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(config.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("http client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                headers,
                config,
                changes: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// How often each `Asana-Change` name has been seen by this client (and its clones).
    pub fn asana_change_counts(&self) -> BTreeMap<String, u64> {
        let changes = self
            .inner
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        changes.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// `GET path?query`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        token: &Token,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Response<T>, Error> {
        self.send(token, with_query(Request::get(path), query))
            .await
    }

    /// `POST path?query` with `{"data": data}`; never retried.
    pub async fn post<T: DeserializeOwned>(
        &self,
        token: &Token,
        path: &str,
        query: &[(&str, &str)],
        data: Value,
    ) -> Result<Response<T>, Error> {
        self.send(token, with_query(Request::post(path, data), query))
            .await
    }

    /// `PUT path?query` with `{"data": data}`; retried only when `idempotent` (the update
    /// sets absolute values).
    pub async fn put<T: DeserializeOwned>(
        &self,
        token: &Token,
        path: &str,
        query: &[(&str, &str)],
        data: Value,
        idempotent: bool,
    ) -> Result<Response<T>, Error> {
        let mut request = with_query(Request::put(path, data), query);
        if idempotent {
            request = request.idempotent();
        }
        self.send(token, request).await
    }

    /// `DELETE path?query`; never retried.
    pub async fn delete<T: DeserializeOwned>(
        &self,
        token: &Token,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Response<T>, Error> {
        self.send(token, with_query(Request::delete(path), query))
            .await
    }

    /// Pages of a list request, following `next_page` for at most `max_pages` pages. Asks for
    /// 100 items a page unless the request sets `limit`.
    pub fn pages<'a, T: DeserializeOwned>(
        &'a self,
        token: &'a Token,
        mut request: Request,
        max_pages: usize,
    ) -> Pages<'a, T> {
        if !request.has_query("limit") {
            request.set_query("limit".to_owned(), DEFAULT_PAGE_SIZE.to_owned());
        }
        Pages {
            client: self,
            token,
            request,
            pages_left: max_pages,
            finished: false,
            _item: PhantomData,
        }
    }

    /// Sends `request` once, as given, and returns Asana's answer whatever its status: a proxy
    /// passes statuses through and leaves retrying to its caller. A body larger than
    /// `max_body` bytes is cut off with [`Error::InvalidResponse`]. The `Asana-Change` headers
    /// are counted as for every other call.
    pub async fn send_raw(
        &self,
        token: &Token,
        request: RawRequest,
        max_body: usize,
    ) -> Result<RawResponse, Error> {
        check_path(&request.path)?;
        let url = self.url_of(&request.path, &request.query)?;
        let mut headers = request.headers;
        headers.remove(reqwest::header::AUTHORIZATION);
        let span =
            tracing::debug_span!("asana.request", method = %request.method, path = %request.path);
        let authorization = token.authorization()?;
        async {
            let mut answer = self
                .inner
                .http
                .request(request.method, url)
                .header(reqwest::header::AUTHORIZATION, authorization)
                .headers(self.inner.headers.clone())
                .headers(headers)
                .body(request.body)
                .send()
                .await
                .map_err(unavailable)?;
            let status = answer.status();
            let headers = answer.headers().clone();
            let changes: Vec<AsanaChange> = headers
                .get_all(ASANA_CHANGE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(AsanaChange::parse)
                .collect();
            self.record_changes(&changes);
            let body = match read_capped(&mut answer, max_body).await {
                Ok(body) => body,
                Err(Capped::TooLong) => {
                    return Err(Error::InvalidResponse {
                        status: status.as_u16(),
                        reason: format!("the body exceeds {max_body} bytes"),
                    });
                }
                Err(Capped::Transport(error)) => return Err(unavailable(error)),
            };
            Ok(RawResponse {
                status,
                headers,
                body: body.into(),
            })
        }
        .instrument(span)
        .await
    }

    /// Sends `request`, retrying it when it is safe to repeat.
    pub async fn send<T: DeserializeOwned>(
        &self,
        token: &Token,
        request: Request,
    ) -> Result<Response<T>, Error> {
        let url = self.url(&request)?;
        let span =
            tracing::debug_span!("asana.request", method = %request.method, path = %request.path);
        self.send_with_retries(token, &request, url)
            .instrument(span)
            .await
    }

    async fn send_with_retries<T: DeserializeOwned>(
        &self,
        token: &Token,
        request: &Request,
        url: Url,
    ) -> Result<Response<T>, Error> {
        let config = &self.inner.config;
        let retryable = request.retryable();
        let mut waited = Duration::ZERO;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.attempt(token, request, url.clone()).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let budget = config.max_retry_wait.saturating_sub(waited);
            let may_retry = retryable && attempt <= config.max_retries;
            let (delay, status) = match failure {
                Failure::Final(error) => return Err(error),
                Failure::RateLimited {
                    retry_after,
                    errors,
                } => {
                    let delay = match retry_after {
                        Some(after) => (after + jitter(after / 10, Duration::from_secs(1)))
                            .min(budget.max(after)),
                        None => self.backoff(attempt),
                    };
                    if !may_retry
                        || !config.retry_rate_limited
                        || retry_after.unwrap_or(delay) > budget
                    {
                        return Err(Error::RateLimited {
                            retry_after,
                            errors,
                        });
                    }
                    (delay.min(budget), 429)
                }
                Failure::Transient {
                    status,
                    errors,
                    reason,
                } => {
                    let delay = self.backoff(attempt);
                    if !may_retry || delay > budget {
                        return Err(Error::Unavailable {
                            status,
                            errors,
                            attempts: attempt,
                            reason,
                        });
                    }
                    (delay, status.unwrap_or(0))
                }
            };
            warn!(
                attempt,
                status,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "asana request failed, retrying"
            );
            tokio::time::sleep(delay).await;
            waited += delay;
        }
    }

    /// One attempt: send, capture `Asana-Change`, read and classify the answer.
    async fn attempt<T: DeserializeOwned>(
        &self,
        token: &Token,
        request: &Request,
        url: Url,
    ) -> Result<Response<T>, Failure> {
        let authorization = token.authorization().map_err(Failure::Final)?;
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::ACCEPT, "application/json");
        if !self.inner.headers.is_empty() {
            builder = builder.headers(self.inner.headers.clone());
        }
        if let Some(data) = &request.data {
            builder = builder.json(&json!({ "data": data }));
        }
        let mut answer = builder.send().await.map_err(transport_failure)?;
        let status = answer.status();
        let headers = answer.headers();
        let asana_change: Vec<AsanaChange> = headers
            .get_all(ASANA_CHANGE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(AsanaChange::parse)
            .collect();
        self.record_changes(&asana_change);
        let request_id = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let max_body = self.inner.config.max_response_bytes;
        let body = match read_capped(&mut answer, max_body).await {
            Ok(body) => body,
            Err(Capped::TooLong) => {
                return Err(Failure::Final(Error::InvalidResponse {
                    status: status.as_u16(),
                    reason: format!("the body exceeds {max_body} bytes"),
                }));
            }
            Err(Capped::Transport(error)) => return Err(transport_failure(error)),
        };
        if status.is_success() {
            let envelope: Envelope200<T> = if body.is_empty() {
                serde_json::from_value(json!({ "data": null }))
            } else {
                serde_json::from_slice(&body)
            }
            .map_err(|e| {
                Failure::Final(Error::InvalidResponse {
                    status: status.as_u16(),
                    reason: e.to_string(),
                })
            })?;
            return Ok(Response {
                data: envelope.data,
                next_page: envelope.next_page,
                status,
                asana_change,
                request_id,
            });
        }
        let errors = serde_json::from_slice::<Envelope>(&body)
            .map(|e| e.errors)
            .unwrap_or_default();
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => Failure::RateLimited {
                retry_after,
                errors,
            },
            StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Failure::Transient {
                status: Some(status.as_u16()),
                reason: format!("asana answered {}", status.as_u16()),
                errors,
            },
            _ => Failure::Final(Error::from_status(status.as_u16(), errors, retry_after, 1)),
        })
    }

    /// Counts each change and warns the first time a name is seen.
    fn record_changes(&self, changes: &[AsanaChange]) {
        if changes.is_empty() {
            return;
        }
        let mut counts = self
            .inner
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            let count = counts.entry(change.name.clone()).or_insert(0);
            if *count == 0 {
                warn!(
                    change = %change.name,
                    info = change.info.as_deref().unwrap_or(""),
                    affected = ?change.affected,
                    "asana announced a breaking change"
                );
            }
            *count += 1;
        }
    }

    /// The request's URL under the base, refusing anything that would leave it.
    fn url(&self, request: &Request) -> Result<Url, Error> {
        check_path(&request.path)?;
        self.url_of(&request.path, &request.query)
    }

    /// `path` (already checked) and `query` under the base, refusing a URL that leaves it.
    ///
    /// The base's scheme, host and port are kept as parsed once; only the path is parsed
    /// per request, so the origin cannot change and no host is parsed (IDNA) again.
    fn url_of(&self, path: &str, query: &[(String, String)]) -> Result<Url, Error> {
        let base = &self.inner.base;
        let mut url = base.clone();
        let base_path = base.path().trim_end_matches('/');
        let mut full = String::with_capacity(base_path.len() + path.len());
        full.push_str(base_path);
        full.push_str(path);
        url.set_path(&full);
        if !url.path().starts_with(base.path()) {
            return Err(Error::InvalidRequest(format!(
                "path {path:?} leaves the API base"
            )));
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Exponential backoff for the `attempt`-th failure with "equal jitter": half the delay
    /// fixed, half random, never above the cap.
    fn backoff(&self, attempt: u32) -> Duration {
        let config = &self.inner.config;
        let exponent = attempt.saturating_sub(1).min(31);
        let delay = config
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(config.backoff_cap);
        delay / 2 + jitter(delay / 2, delay)
    }
}

fn with_query(mut request: Request, query: &[(&str, &str)]) -> Request {
    for (name, value) in query {
        request.set_query((*name).to_owned(), (*value).to_owned());
    }
    request
}

fn transport_failure(error: reqwest::Error) -> Failure {
    Failure::Transient {
        status: None,
        errors: Vec::new(),
        reason: transport_reason(error),
    }
}

/// What went wrong on the wire, without the URL (which may carry query values).
fn transport_reason(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    format!("{kind}: {}", error.without_url())
}

/// A raw request that got no answer.
fn unavailable(error: reqwest::Error) -> Error {
    Error::Unavailable {
        status: None,
        errors: Vec::new(),
        attempts: 1,
        reason: transport_reason(error),
    }
}

/// A random duration in `0..=min(spread, cap)`.
fn jitter(spread: Duration, cap: Duration) -> Duration {
    let fraction = getrandom::u64()
        .map(|bits| (bits >> 11) as f64 / (1_u64 << 53) as f64)
        .unwrap_or(0.5);
    spread.min(cap).mul_f64(fraction)
}

/// Pages of a list, from [`Client::pages`].
#[derive(Debug)]
pub struct Pages<'a, T> {
    client: &'a Client,
    token: &'a Token,
    request: Request,
    pages_left: usize,
    finished: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Pages<'_, T> {
    /// The next page, or `None` after the last page, an error, or the page bound.
    pub async fn next_page(&mut self) -> Option<Result<Response<Vec<T>>, Error>> {
        if self.finished || self.pages_left == 0 {
            return None;
        }
        self.pages_left -= 1;
        let result = self
            .client
            .send::<Vec<T>>(self.token, self.request.clone())
            .await;
        match &result {
            Ok(page) => match &page.next_page {
                Some(next) => self
                    .request
                    .set_query("offset".to_owned(), next.offset.clone()),
                None => self.finished = true,
            },
            Err(_) => self.finished = true,
        }
        Some(result)
    }

    /// Every page up to the bound, concatenated. `next_page` is set when the bound cut the
    /// list short; `asana_change` holds every page's changes; `status` and `request_id` are the
    /// last page's.
    pub async fn collect_all(mut self) -> Result<Response<Vec<T>>, Error> {
        let mut all: Option<Response<Vec<T>>> = None;
        while let Some(page) = self.next_page().await {
            let page = page?;
            all = Some(match all {
                None => page,
                Some(mut all) => {
                    all.data.extend(page.data);
                    all.asana_change.extend(page.asana_change);
                    all.next_page = page.next_page;
                    all.status = page.status;
                    all.request_id = page.request_id;
                    all
                }
            });
        }
        all.ok_or_else(|| Error::InvalidRequest("a page bound of 0 fetches nothing".to_owned()))
    }
}

/// Why a body was not read whole.
enum Capped {
    TooLong,
    Transport(reqwest::Error),
}

/// The body of `answer`, read chunk by chunk and never past `max` bytes.
async fn read_capped(answer: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, Capped> {
    if answer
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(Capped::TooLong);
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(Capped::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(Capped::TooLong);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base_url: &str) -> Result<Client, Error> {
        Client::new(Config {
            base_url: base_url.to_owned(),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(1000),
            ..Config::default()
        })
    }

    #[test]
    fn urls_stay_under_the_base() -> Result<(), Error> {
        let client = client("http://asana.test/api/1.0/")?;
        let url = client.url(&Request::get("/users/me").opt_fields(["name", "email"]))?;
        assert_eq!(
            url.as_str(),
            "http://asana.test/api/1.0/users/me?opt_fields=name%2Cemail"
        );
        assert!(client.url(&Request::get("/../admin")).is_err());
        assert_eq!(
            client.url(&Request::get("/tasks/12%2F%2E%2E"))?.as_str(),
            "http://asana.test/api/1.0/tasks/12%2F%2E%2E",
            "an encoded value stays one segment"
        );
        let bare = super::Client::new(Config {
            base_url: "http://asana.test".to_owned(),
            ..Config::default()
        })?;
        assert_eq!(
            bare.url(&Request::get("/users/me"))?.as_str(),
            "http://asana.test/users/me",
            "a base without a path (e.g. a proxy) keeps the request's path"
        );
        assert!(client.url(&Request::get("//evil.test/x")).is_err());
        Ok(())
    }

    #[test]
    fn backoff_grows_jittered_and_capped() -> Result<(), Error> {
        let client = client("http://asana.test/api/1.0")?;
        for attempt in 1..=10 {
            let full =
                (Duration::from_millis(100) * (1 << (attempt - 1))).min(Duration::from_secs(1));
            let delay = client.backoff(attempt);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
        Ok(())
    }

    #[test]
    fn bad_configs_fail_fast() {
        assert!(client("not a url").is_err());
        assert!(client("ftp://asana.test").is_err());
        let commas = Client::new(Config {
            asana_enable: vec!["a,b".into()],
            ..Config::default()
        });
        assert!(matches!(commas, Err(Error::InvalidConfig(_))));
    }
}
