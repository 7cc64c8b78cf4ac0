use std::fmt;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// A bearer token. `Debug` prints `[redacted]`, and there is no `Display`.
///
/// Its `Authorization` header is built once, when the token is made, and marked sensitive (so
/// HTTP/2 never indexes it): a cached token costs no formatting per request.
#[derive(Clone)]
pub struct Token {
    secret: String,
    /// `Bearer <secret>`; `None` when the secret cannot be a header value.
    header: Option<HeaderValue>,
}

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        let secret = value.into();
        let header = HeaderValue::try_from(format!("Bearer {secret}"))
            .ok()
            .map(|mut header| {
                header.set_sensitive(true);
                header
            });
        Self { secret, header }
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// The `Authorization` header that sends it.
    pub fn authorization(&self) -> Result<HeaderValue, Error> {
        self.header.clone().ok_or_else(|| {
            Error::InvalidRequest("the bearer token is not a valid header value".to_owned())
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One call: method, path relative to the API base, query, and the body's `data`.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) data: Option<Value>,
    pub(crate) idempotent: bool,
}

impl Request {
    fn new(method: Method, path: impl Into<String>, data: Option<Value>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            data,
            idempotent: false,
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path, None)
    }

    /// A create or an action; never retried.
    pub fn post(path: impl Into<String>, data: Value) -> Self {
        Self::new(Method::POST, path, Some(data))
    }

    /// An update; retried only when marked [`Request::idempotent`].
    pub fn put(path: impl Into<String>, data: Value) -> Self {
        Self::new(Method::PUT, path, Some(data))
    }

    /// Never retried: a repeated delete answers 404 although the first one succeeded.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path, None)
    }

    /// Adds a query parameter, replacing an earlier one with the same name.
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_query(name.into(), value.into());
        self
    }

    /// `opt_fields=a,b.c`: the fields Asana should return besides the compact ones.
    pub fn opt_fields<I>(self, fields: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let fields: Vec<String> = fields.into_iter().map(|f| f.as_ref().to_owned()).collect();
        self.query("opt_fields", fields.join(","))
    }

    /// Marks a PUT as safe to repeat (it sets absolute values), so it is retried like a read.
    /// Has no effect on POST or DELETE.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    pub(crate) fn set_query(&mut self, name: String, value: String) {
        match self.query.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.query.push((name, value)),
        }
    }

    pub(crate) fn has_query(&self, name: &str) -> bool {
        self.query.iter().any(|(n, _)| n == name)
    }

    /// Whether a failed attempt may be repeated.
    pub(crate) fn retryable(&self) -> bool {
        self.method == Method::GET
            || self.method == Method::HEAD
            || (self.method == Method::PUT && self.idempotent)
    }
}

/// A success, with Asana's `data` unwrapped.
#[derive(Debug, Clone)]
pub struct Response<T> {
    pub data: T,
    /// Present when the request sent `limit` and more results remain.
    pub next_page: Option<NextPage>,
    pub status: StatusCode,
    /// Every `Asana-Change` header of the answer.
    pub asana_change: Vec<AsanaChange>,
    /// `X-Request-Id`, when Asana sent one.
    pub request_id: Option<String>,
}

/// Asana's pointer to the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextPage {
    pub offset: String,
    pub path: String,
    pub uri: String,
}

/// One `Asana-Change: name=…;info=…;affected=true` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsanaChange {
    pub name: String,
    pub info: Option<String>,
    /// `Some(true)` when Asana says this request is affected; `None` means "may be affected"
    /// (Asana never sends `affected=false`).
    pub affected: Option<bool>,
}

impl AsanaChange {
    pub fn parse(header: &str) -> Option<Self> {
        let mut name = None;
        let mut info = None;
        let mut affected = None;
        for part in header.split(';') {
            let Some((key, value)) = part.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "name" => name = Some(value.to_owned()),
                "info" => info = Some(value.to_owned()),
                "affected" => affected = Some(value.eq_ignore_ascii_case("true")),
                _ => {}
            }
        }
        Some(Self {
            name: name.filter(|n| !n.is_empty())?,
            info,
            affected,
        })
    }
}

/// Refuses paths that could leave the API base: absolute or scheme-relative URLs, `.` and `..`
/// segments (also percent-encoded), and query strings or fragments smuggled into the path.
pub fn check_path(path: &str) -> Result<(), Error> {
    let invalid = |why: &str| Err(Error::InvalidRequest(format!("path {path:?} {why}")));
    if !path.starts_with('/') || path.starts_with("//") {
        return invalid("must start with a single '/' (relative to the API base)");
    }
    if path.as_bytes().windows(3).any(|w| w == b"://") {
        return invalid("must not be an absolute URL");
    }
    if path
        .chars()
        .any(|c| matches!(c, '?' | '#' | '\\') || c.is_whitespace() || c.is_control())
    {
        return invalid("must not contain '?', '#', '\\', whitespace or control characters");
    }
    if path.split('/').any(is_dot_segment) {
        return invalid("must not contain '.' or '..' segments");
    }
    Ok(())
}

/// Whether `segment` is `.` or `..`, each dot written as itself or as `%2e` (any case).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
    }
    matches!(dots, 1 | 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_base_are_refused() {
        for path in [
            "users/me",
            "//evil.test/x",
            "http://evil.test/api/1.0/users/me",
            "/users/../../admin",
            "/users/%2E%2E/x",
            "/users/.%2e",
            "/users/./me",
            "/users/me?x=1",
            "/users/me#x",
            "/users\\me",
            "/users/ me",
        ] {
            assert!(
                matches!(check_path(path), Err(Error::InvalidRequest(_))),
                "{path} was accepted"
            );
        }
        for path in [
            "/users/me",
            "/workspaces/123/users",
            "/tasks/1..2",
            "/",
            "/tasks/...",
            "/tasks/%2e%2e%2e",
            "/tasks/%2",
            "/tasks/.x",
            "/time:30",
        ] {
            assert!(check_path(path).is_ok(), "{path} was refused");
        }
    }

    #[test]
    fn asana_change_headers_parse() {
        assert_eq!(
            AsanaChange::parse("name=new_goal_memberships;info=https://asana.test/x;affected=true"),
            Some(AsanaChange {
                name: "new_goal_memberships".into(),
                info: Some("https://asana.test/x".into()),
                affected: Some(true),
            })
        );
        assert_eq!(
            AsanaChange::parse("name=a; info=https://x.test/?q=1"),
            Some(AsanaChange {
                name: "a".into(),
                info: Some("https://x.test/?q=1".into()),
                affected: None,
            })
        );
        assert_eq!(AsanaChange::parse("info=x"), None);
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = Token::new("secret-value");
        assert_eq!(format!("{token:?}"), "[redacted]");
    }

    #[test]
    fn token_carries_its_sensitive_authorization_header() {
        let header = Token::new("secret-value")
            .authorization()
            .expect("a valid header");
        assert_eq!(header, "Bearer secret-value");
        assert!(header.is_sensitive());
        let refused = Token::new("line\nbreak")
            .authorization()
            .expect_err("no header");
        assert!(!refused.to_string().contains("line"), "{refused}");
    }

    #[test]
    fn only_reads_and_idempotent_puts_are_retryable() {
        assert!(Request::get("/x").retryable());
        assert!(!Request::post("/x", Value::Null).retryable());
        assert!(!Request::post("/x", Value::Null).idempotent().retryable());
        assert!(!Request::put("/x", Value::Null).retryable());
        assert!(Request::put("/x", Value::Null).idempotent().retryable());
        assert!(!Request::delete("/x").idempotent().retryable());
    }
}
