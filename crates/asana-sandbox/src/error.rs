//! Asana's error envelope: `{"errors": [{"message", "help", "phrase"}]}` with its status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Where Asana's errors point for help.
pub const HELP: &str = "For more information on API status codes and how to handle them, read the docs on errors: https://developers.asana.com/docs/errors";

/// What Asana says for an expired access token.
pub const EXPIRED: &str = "The bearer token has expired. If you have a refresh token, please use it to request a new bearer token, otherwise allow the user to re-authenticate.";

/// An error response exactly as Asana shapes it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, for 429s.
    pub retry_after: Option<u64>,
    /// Extra top-level fields (e.g. `sync` on a 412 from `/events`).
    pub extra: Option<(String, Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            extra: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Not Authorized")
    }

    pub fn expired() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, EXPIRED)
    }

    pub fn payment_required() -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "This feature is only available to premium users.",
        )
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "You've made too many requests and hit a rate limit. Please retry after the given amount of time.",
            )
        }
    }

    /// A 500 with the incident `phrase` Asana adds to server errors.
    pub fn server_error() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Server Error")
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra = Some((key.to_owned(), value));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = json!({"message": self.message, "help": HELP});
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            error["phrase"] = json!("6 sad squid snuggle softly");
        }
        let mut body = json!({"errors": [error]});
        if let Some((key, value)) = &self.extra {
            body[key] = value.clone();
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
