//! `ProxyRequest`: any path under a REST connection's API base, through the same token, rate
//! and audit layer as tools. Everything about the request is checked before a token is
//! fetched, so a refused request reaches neither token-vault nor Asana.

use asana_client::{AsanaChange, RawRequest, RawResponse};
use asana_tools::RateClass;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::Error;
use crate::executor::{CallContext, Executor};
use crate::pipeline::{Attempt, Sender};
use crate::rate::Demand;
use crate::requests::Proxy;
use crate::tokens::AccessToken;
use crate::trail::Trail;

/// The tool a `ProxyRequest` is checked as when its method and path are no operation of the
/// spec: a caller may send such a request only if its `tools` name this explicitly (`"*"`
/// does not).
pub(crate) const UNLISTED_OPERATION: &str = "asana_proxy_unlisted_path";

/// Request headers a caller may set.
const ALLOWED_HEADERS: [&str; 4] = ["asana-enable", "asana-disable", "content-type", "accept"];

/// Response headers that describe the hop, not the answer.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
];

/// A checked proxy request.
#[derive(Debug)]
pub(crate) struct Checked {
    pub request: RawRequest,
    pub class: RateClass,
}

/// Checks method, path, headers and size; nothing is sent for a request that fails here.
pub(crate) fn check(r: &Proxy, max_body: usize) -> Result<Checked, Error> {
    let invalid =
        |field: &'static str, description: String| Error::InvalidArgument { field, description };
    let method = match r.method.as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        other => {
            return Err(invalid(
                "method",
                format!("`{other}` is not allowed; use GET, POST, PUT, PATCH or DELETE"),
            ));
        }
    };
    asana_client::check_path(&r.path).map_err(|e| invalid("path", e.to_string()))?;
    let lower = r.path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(invalid(
            "path",
            format!(
                "path {:?} must not contain an encoded '/' or '\\': a server that decodes it \
                 would leave the API base",
                r.path
            ),
        ));
    }
    if r.body.len() > max_body {
        return Err(invalid(
            "body",
            format!("{} bytes exceed the limit of {max_body}", r.body.len()),
        ));
    }
    if method == Method::GET && !r.body.is_empty() {
        return Err(invalid("body", "a GET carries no body".to_owned()));
    }
    let mut headers = HeaderMap::new();
    for (header_name, header_value) in &r.headers {
        let name = header_name.to_ascii_lowercase();
        if !ALLOWED_HEADERS.contains(&name.as_str()) {
            return Err(invalid(
                "headers",
                format!(
                    "header `{header_name}` is not allowed (allowed: {})",
                    ALLOWED_HEADERS.join(", ")
                ),
            ));
        }
        let value = HeaderValue::from_str(header_value)
            .map_err(|_| invalid("headers", format!("header `{name}` has an invalid value")))?;
        headers.append(
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("headers", format!("invalid header name `{name}`")))?,
            value,
        );
    }
    if !r.body.is_empty() && !headers.contains_key(reqwest::header::CONTENT_TYPE) {
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let class = if r.path.ends_with("/search") {
        RateClass::Search
    } else if method == Method::GET {
        RateClass::Read
    } else {
        RateClass::Write
    };
    Ok(Checked {
        request: RawRequest {
            method,
            path: r.path.clone(),
            query: r.query.clone(),
            headers,
            body: r.body.clone(),
        },
        class,
    })
}

/// A checked request sent as it is: Asana's status, 401 and 429 included, is the answer.
struct Proxied<'a> {
    client: &'a asana_client::Client,
    checked: &'a Checked,
    max_response_bytes: usize,
}

impl Sender for Proxied<'_> {
    type Output = RawResponse;

    fn demand(&self) -> Demand {
        Demand::of(self.checked.class)
    }

    /// One attempt: a 429 is returned to the caller (the token still backs off).
    fn repeatable(&self) -> bool {
        false
    }

    async fn send(
        &self,
        token: &AccessToken,
        trail: &mut Trail,
    ) -> Result<Attempt<RawResponse>, Error> {
        let answer = self
            .client
            .send_raw(
                &token.token,
                self.checked.request.clone(),
                self.max_response_bytes,
            )
            .await
            .map_err(|e| match e {
                asana_client::Error::InvalidRequest(reason) => Error::InvalidArgument {
                    field: "path",
                    description: reason,
                },
                other => Error::Unavailable {
                    dependency: "asana",
                    reason: other.to_string(),
                },
            })?;
        let header = |name| answer.headers.get(name).and_then(|v| v.to_str().ok());
        trail.answered(answer.status.as_u16(), header("x-request-id"));
        let changes: Vec<AsanaChange> = answer
            .headers
            .get_all("asana-change")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(AsanaChange::parse)
            .collect();
        trail.changes(changes.iter().map(|c| c.name.as_str()));
        Ok(match answer.status.as_u16() {
            401 => Attempt::Rejected { last: Ok(answer) },
            429 => Attempt::RateLimited {
                retry_after: header(reqwest::header::RETRY_AFTER.as_str())
                    .and_then(|v| v.trim().parse().ok())
                    .map(std::time::Duration::from_secs),
                last: Ok(answer),
            },
            _ => Attempt::Answer(answer),
        })
    }
}

impl Executor {
    /// Sends a checked request as the account; Asana's status is returned as it is.
    pub(crate) async fn run_proxy(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        checked: &Checked,
        trail: &mut Trail,
    ) -> Result<RawResponse, Error> {
        let proxied = Proxied {
            client,
            checked,
            max_response_bytes: self.proxy.max_response_bytes,
        };
        self.run_as(context, &proxied, trail).await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn request(
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Proxy {
        Proxy {
            account: crate::tokens::AccountKey {
                tenant: "acme".into(),
                connection: "asana".into(),
                identifier: "alice".into(),
            },
            method,
            path,
            query: Vec::new(),
            headers,
            body: body.into(),
        }
    }

    /// Paths built from pieces that attacks on a proxy combine.
    fn paths() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("%2e".to_owned()),
            Just("%2F".to_owned()),
            Just("%5c".to_owned()),
            Just("\\".to_owned()),
            Just("?".to_owned()),
            Just("#".to_owned()),
            Just("//evil.example".to_owned()),
            Just("http://evil.example".to_owned()),
            Just("tasks".to_owned()),
            Just("1201".to_owned()),
            "[a-zA-Z0-9_%~:@ -]{0,8}",
            any::<String>(),
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a caller sends, the check answers (no panic) with a request that stays
        /// under the API base, or with INVALID_ARGUMENT naming the field.
        #[test]
        fn the_check_never_lets_a_request_leave_the_api_base(
            method in prop_oneof![
                Just("GET".to_owned()),
                Just("POST".to_owned()),
                Just("DELETE".to_owned()),
                Just("PATCH".to_owned()),
                any::<String>(),
            ],
            path in paths(),
            headers in proptest::collection::vec((any::<String>(), any::<String>()), 0..4),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            match check(&request(method, path.clone(), headers, body), 32) {
                Ok(checked) => {
                    let lower = checked.request.path.to_ascii_lowercase();
                    prop_assert!(checked.request.path.starts_with('/'), "{path:?}");
                    prop_assert!(!checked.request.path.starts_with("//"), "{path:?}");
                    for bad in ["%2f", "%5c", "\\", "?", "#", "://"] {
                        prop_assert!(!lower.contains(bad), "{bad} in {path:?}");
                    }
                    // No segment is `.` or `..` once a server decodes its dots.
                    for segment in lower.split('/') {
                        let decoded = segment.replace("%2e", ".");
                        prop_assert!(decoded != "." && decoded != "..", "{segment} in {path:?}");
                    }
                    prop_assert!(!checked.request.headers.contains_key("authorization"));
                    prop_assert!(checked.request.body.len() <= 32);
                }
                Err(Error::InvalidArgument { field, .. }) => {
                    prop_assert!(["method", "path", "headers", "body"].contains(&field));
                }
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Resolving any method and path to a spec operation never panics, and what it finds
        /// has that method.
        #[test]
        fn resolving_any_request_to_an_operation_is_total(
            method in prop_oneof![Just("GET".to_owned()), Just("DELETE".to_owned()), any::<String>()],
            path in paths(),
        ) {
            let catalogue = catalogue();
            if let Some(tool) = catalogue.operation(&method, &path) {
                prop_assert_eq!(format!("{:?}", tool.route.method).to_uppercase(), method);
            }
        }
    }

    fn catalogue() -> &'static asana_tools::Catalogue {
        static CATALOGUE: std::sync::OnceLock<asana_tools::Catalogue> = std::sync::OnceLock::new();
        CATALOGUE.get_or_init(|| asana_tools::Catalogue::new().expect("catalogue"))
    }
}
