//! The audit event model shared by audit-log and every service that records events.
//!
//! [`Event`] is what happened, as its emitter saw it; [`Recorded`] is an event once audit-log
//! has placed it in its tenant's hash chain. Neither ever holds a secret: tool inputs are
//! recorded as digests, credentials by account id and version.

pub mod event;

pub use event::{Actor, CredentialRef, Event, InvalidEvent, Outcome, Recorded, Subject, action};
