//! The audit event model shared by audit-log and every service that records events, and the
//! emitter those services record them with.
//!
//! [`Event`] is what happened, as its emitter saw it; [`Recorded`] is an event once audit-log
//! has placed it in its tenant's hash chain. Neither ever holds a secret: tool inputs are
//! recorded as digests, credentials by account id and version. [`Emitter`] sends events to
//! audit-log in the background, spooling them to local disk while audit-log is unreachable.

pub mod emitter;
pub mod event;
pub mod export;
mod sink;
mod spool;
mod wire;
mod worker;

pub use emitter::{
    Durability, EmitError, Emitter, EmitterConfig, MAX_BATCH, StartError, State, Stats,
};
pub use event::{
    Actor, CredentialRef, Event, InvalidEvent, Outcome, Recorded, Subject, action, input_digest,
};
pub use sink::{Sink, SinkConfig};
