use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// One entry of Asana's error envelope `{"errors": [{"message", "help", "phrase"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(default)]
    pub help: Option<String>,
    /// The incident phrase Asana puts on 500s, for its support.
    #[serde(default)]
    pub phrase: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    #[serde(default)]
    pub errors: Vec<ErrorDetail>,
}

/// What Asana says for an expired access token starts with this (compared case-insensitively).
const EXPIRED: &str = "the bearer token has expired";

/// Why a call failed. No variant carries the bearer token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request was refused before anything was sent (a path escaping the API base, a bad
    /// header value).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The client's [`Config`](crate::Config) cannot work.
    #[error("invalid asana client config: {0}")]
    InvalidConfig(String),
    /// 401: `expired` when Asana said the bearer token has expired (refresh and retry once);
    /// otherwise the token is invalid or revoked, or the app is blocked (re-consent).
    #[error("asana rejected the token{}: {}", expired_note(.expired), Details(.errors))]
    Unauthorized {
        expired: bool,
        errors: Vec<ErrorDetail>,
    },
    /// 402: the feature is above the domain's plan.
    #[error("asana requires a paid plan: {}", Details(.errors))]
    PaymentRequired { errors: Vec<ErrorDetail> },
    /// 404: unknown route or object.
    #[error("asana found nothing there: {}", Details(.errors))]
    NotFound { errors: Vec<ErrorDetail> },
    /// 429, not retried (the request is not safe to repeat, retries ran out, or `Retry-After`
    /// exceeds what is left of the retry budget).
    #[error("asana rate limit hit{}: {}", retry_note(.retry_after), Details(.errors))]
    RateLimited {
        retry_after: Option<Duration>,
        errors: Vec<ErrorDetail>,
    },
    /// Any other 4xx: Asana's messages say what was wrong with the request.
    #[error("asana answered {status}: {}", Details(.errors))]
    Api {
        status: u16,
        errors: Vec<ErrorDetail>,
    },
    /// A 5xx, a connection error or a timeout, after the retries the request allowed.
    #[error("asana unavailable after {attempts} attempt(s): {reason}{}", details_note(.errors))]
    Unavailable {
        /// The last HTTP status, when Asana answered at all.
        status: Option<u16>,
        errors: Vec<ErrorDetail>,
        attempts: u32,
        reason: String,
    },
    /// A success whose body is not the JSON the caller asked for.
    #[error("asana answered {status} with a body that could not be read: {reason}")]
    InvalidResponse { status: u16, reason: String },
}

impl Error {
    /// The error for a non-success answer that is not retried.
    pub(crate) fn from_status(
        status: u16,
        errors: Vec<ErrorDetail>,
        retry_after: Option<Duration>,
        attempts: u32,
    ) -> Self {
        match status {
            401 => Self::Unauthorized {
                expired: errors
                    .iter()
                    .any(|e| e.message.to_ascii_lowercase().starts_with(EXPIRED)),
                errors,
            },
            402 => Self::PaymentRequired { errors },
            404 => Self::NotFound { errors },
            429 => Self::RateLimited {
                retry_after,
                errors,
            },
            500..=599 => Self::Unavailable {
                status: Some(status),
                reason: format!("asana answered {status}"),
                errors,
                attempts,
            },
            _ => Self::Api { status, errors },
        }
    }
}

fn expired_note(expired: &bool) -> &'static str {
    if *expired { " as expired" } else { "" }
}

fn retry_note(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(" (retry after {}s)", d.as_secs()))
        .unwrap_or_default()
}

fn details_note(errors: &[ErrorDetail]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", Details(errors))
    }
}

/// Asana's messages, with the incident phrase when there is one.
struct Details<'a>(&'a [ErrorDetail]);

impl fmt::Display for Details<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no error message");
        }
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&error.message)?;
            if let Some(phrase) = &error.phrase {
                write!(f, " (phrase: {phrase})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(message: &str, phrase: Option<&str>) -> ErrorDetail {
        ErrorDetail {
            message: message.to_owned(),
            help: None,
            phrase: phrase.map(str::to_owned),
        }
    }

    #[test]
    fn expiry_is_told_apart_from_other_401s() {
        let expired = Error::from_status(
            401,
            vec![detail("The bearer token has expired. If you have…", None)],
            None,
            1,
        );
        assert!(matches!(expired, Error::Unauthorized { expired: true, .. }));
        let revoked = Error::from_status(401, vec![detail("Not Authorized", None)], None, 1);
        assert!(matches!(
            revoked,
            Error::Unauthorized { expired: false, .. }
        ));
    }

    #[test]
    fn display_shows_messages_and_phrase() {
        let error = Error::from_status(
            500,
            vec![detail("Server Error", Some("6 sad squid snuggle softly"))],
            None,
            3,
        );
        assert_eq!(
            error.to_string(),
            "asana unavailable after 3 attempt(s): asana answered 500 (Server Error (phrase: 6 sad squid snuggle softly))"
        );
        let error = Error::from_status(
            400,
            vec![detail("limit: bad", None), detail("offset: bad", None)],
            None,
            1,
        );
        assert_eq!(
            error.to_string(),
            "asana answered 400: limit: bad; offset: bad"
        );
    }
}
