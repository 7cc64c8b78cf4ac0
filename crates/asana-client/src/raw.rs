//! Raw requests: any method, path, query, headers and body under the API base, answered with
//! Asana's status, headers and body as they are. For a proxy that must not reinterpret what it
//! forwards; typed calls use [`Client::send`](crate::Client::send).

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

/// One request, sent as given (the bearer token and `Asana-Enable`/`-Disable` are added).
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: Method,
    /// Relative to the API base; checked like every other path.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Asana's answer, unmodified.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}
