//! [`Emitter`]: records audit events in audit-log without making the caller wait, and without
//! losing one.
//!
//! [`Emitter::emit`] checks the event the way audit-log will, puts it on a bounded in-memory
//! queue and returns. One background task takes events off the queue in order and batches them
//! (`batch_size` events or 1 MiB, or `flush_interval` after the batch's first event). Each batch
//! ends in exactly one of three places:
//!
//! - **Delivered**: audit-log acknowledged its `Append`. Appends are idempotent per event id, so
//!   a batch sent twice (an answer lost, a crash before a segment was deleted) is stored once.
//! - **Spooled**: audit-log is unreachable: a connect failure, no answer within
//!   `request_timeout`, or any status but the three below (UNAVAILABLE, RESOURCE_EXHAUSTED,
//!   INTERNAL… and also UNIMPLEMENTED or NOT_FOUND, which an operator fixes without changing the
//!   batch). The batch is written durably to `spool_dir`, and so is every later batch while the
//!   spool holds anything, so order is kept. A replay loop sends the oldest spooled batch with
//!   jittered exponential backoff (100 ms doubling to 5 s), deletes a segment once all of its
//!   batches are acknowledged, and hands back to direct sending once the spool is empty. An
//!   emitter started on a `spool_dir` left by an earlier process replays it before anything new.
//! - **Dead-lettered**: audit-log refused the batch for good (INVALID_ARGUMENT, PERMISSION_DENIED,
//!   UNAUTHENTICATED). It is appended to `<spool_dir>/dead-letter` and logged at error level with
//!   its size (never its content); the events behind it go on.
//!
//! Nothing is dropped. [`Emitter::record`], what services use, waits for room in the queue
//! (backpressure on whoever records) and fails only once the emitter is shut down; the
//! non-blocking [`Emitter::emit`] refuses instead, with [`EmitError::QueueFull`]. When the spool
//! reaches `spool_max_bytes` (or cannot be written), the batch that did not fit stays in memory,
//! the queue stops draining (so `record` waits and `emit` returns [`EmitError::SpoolFull`])
//! until replay has freed space. A service checks [`Emitter::is_healthy`] to refuse work rather
//! than act unaudited, and reports itself unready while [`Emitter::keeps_up`] is false.
//!
//! # Spool format
//!
//! `spool_dir` holds segment files `<sequence>.seg` (20 digits, so name order is age order), a
//! `lock` file (one emitter per directory) and `dead-letter`. Segments and `dead-letter` are
//! append-only sequences of records, one per batch: a 4-byte big-endian length, then that many
//! bytes of an encoded `agentauth.audit.v1.AppendRequest`. A record is written and `fsync`ed (and
//! a new file's directory too) before its batch counts as spooled. Protobuf rather than NDJSON:
//! it is exactly what `Append` takes, so replay re-sends what was written without a second
//! mapping (each event is encoded once, where it is recorded, and those bytes are what the
//! batch, the journal, the spool and `Append` carry: see `wire.rs`), it is compact, and with
//! the length prefix a record torn by a crash is detected (a reader stops at a record that is
//! incomplete or does not decode, and logs how many bytes it skipped). A segment takes no more appends once it holds 4 MiB or replay has started on it, so
//! replay only reads files that no longer change, a bounded amount at a time, and re-sends each
//! batch as it was formed (one bad batch never takes good ones with it). `dead-letter` is never
//! replayed nor counted against `spool_max_bytes`; an operator inspects and removes it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_proto::audit::v1 as pb;
use serde::Deserialize;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, InvalidEvent};
use crate::spool::Spool;
use crate::wire::{AppendClient, Frame};
use crate::worker::Worker;

/// The most events audit-log takes in one `Append`.
pub const MAX_BATCH: usize = 1000;

/// The `[audit]` section of a service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmitterConfig {
    /// audit-log's gRPC address.
    pub url: String,
    /// A file holding the API key this service presents to audit-log (read at start).
    pub api_key_file: Option<PathBuf>,
    /// Where events wait while audit-log is unreachable; must survive restarts.
    pub spool_dir: PathBuf,
    /// The most events per `Append` (at most [`MAX_BATCH`]).
    pub batch_size: usize,
    /// How long an event may wait for its batch to fill.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// How many events may wait in memory before `emit` returns [`EmitError::QueueFull`].
    pub queue_capacity: usize,
    /// How large the spool may grow before `emit` returns [`EmitError::SpoolFull`].
    pub spool_max_bytes: u64,
    /// How long one `Append` may take before audit-log counts as unreachable.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// `async`: events wait in memory for their batch (a crash loses the ones not yet
    /// delivered or spooled). `sync`: each event is also written to a journal in `spool_dir`
    /// and synced to disk before `record` returns (calls recorded together share one sync),
    /// so a crash loses no event whose call was answered.
    pub durability: Durability,
}

/// See [`EmitterConfig::durability`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Async,
    Sync,
}

impl Default for EmitterConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50053".to_owned(),
            api_key_file: None,
            spool_dir: PathBuf::from("audit-spool"),
            batch_size: 500,
            flush_interval: Duration::from_millis(100),
            queue_capacity: 10_000,
            spool_max_bytes: 256 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            durability: Durability::Async,
        }
    }
}

impl EmitterConfig {
    fn validate(&self) -> Result<(), StartError> {
        let checks = [
            (
                (1..=MAX_BATCH).contains(&self.batch_size),
                "batch_size must be between 1 and 1000",
            ),
            (self.queue_capacity > 0, "queue_capacity must be at least 1"),
            (
                !self.flush_interval.is_zero(),
                "flush_interval must be positive",
            ),
            (
                !self.request_timeout.is_zero(),
                "request_timeout must be positive",
            ),
            (self.spool_max_bytes > 0, "spool_max_bytes must be positive"),
        ];
        match checks.into_iter().find(|(ok, _)| !ok) {
            Some((_, problem)) => Err(StartError::Config(problem)),
            None => Ok(()),
        }
    }
}

/// Why [`Emitter::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid [audit] configuration: {0}")]
    Config(&'static str),
    #[error("cannot read the audit-log API key from {path}: {source}")]
    ApiKey { path: PathBuf, source: io::Error },
    #[error("audit-log client: {0}")]
    Client(#[from] agentauth_grpc::client::Error),
    #[error("audit spool {path}: {source}")]
    Spool { path: PathBuf, source: io::Error },
    #[error("audit spool {path} is in use by another emitter")]
    Locked { path: PathBuf },
    #[error("the audit emitter must be started inside a Tokio runtime")]
    NoRuntime,
}

/// Why an event was not accepted. The caller decides what to do; the event is not recorded.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("the audit queue is full")]
    QueueFull,
    #[error("the audit spool is full")]
    SpoolFull,
    #[error("the audit emitter is shut down")]
    Closed,
    #[error("invalid audit event: {0}")]
    Invalid(#[from] InvalidEvent),
    /// `durability = "sync"` and the journal could not be written: the event waits in memory
    /// only (a crash would lose it).
    #[error("the audit journal cannot be written")]
    NotDurable,
}

/// Where new events go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Straight to audit-log.
    Delivering = 0,
    /// To the spool, behind the events already there, while audit-log is unreachable.
    Spooling = 1,
    /// Nowhere: the spool is full or cannot be written; `emit` returns [`EmitError::SpoolFull`].
    SpoolFull = 2,
    /// Nowhere: the emitter was shut down.
    Closed = 3,
}

/// Event counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Accepted by `emit`.
    pub emitted: u64,
    /// Acknowledged by audit-log (replayed ones included).
    pub delivered: u64,
    /// Written to the spool.
    pub spooled: u64,
    /// Refused for good by audit-log and written to the dead-letter file.
    pub dead_lettered: u64,
}

/// Records audit events in audit-log from a background task. Cheap to clone; the task stops
/// (spooling what it holds) at [`Emitter::shutdown`] or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Emitter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: mpsc::Sender<Message>,
    durability: Durability,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Debug)]
pub(crate) enum Message {
    /// An event, and who waits for it to be in the journal (`durability = "sync"`).
    Event(Frame, Option<oneshot::Sender<()>>),
    /// Answered once every event queued before it is delivered, spooled or dead-lettered.
    Flush(oneshot::Sender<()>),
}

/// What the handle and the task share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: AtomicU8,
    closed: AtomicBool,
    /// The last journal write failed (`durability = "sync"`).
    pub(crate) journal_failing: AtomicBool,
    emitted: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

impl Shared {
    fn state(&self) -> State {
        if self.closed.load(Ordering::Acquire) {
            return State::Closed;
        }
        Self::decode(self.state.load(Ordering::Acquire))
    }

    /// From now on `emit` refuses events.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Sets the task's state and returns the one before.
    pub(crate) fn transition(&self, to: State) -> State {
        Self::decode(self.state.swap(to as u8, Ordering::AcqRel))
    }

    /// The inverse of `state as u8` for the states the task sets.
    fn decode(state: u8) -> State {
        match state {
            1 => State::Spooling,
            2 => State::SpoolFull,
            _ => State::Delivering,
        }
    }

    pub(crate) fn count(counter: &AtomicU64, events: usize) {
        counter.fetch_add(events as u64, Ordering::Relaxed);
    }
}

impl Emitter {
    /// Reads the API key, opens and locks the spool, and starts the background task, which first
    /// replays whatever an earlier process spooled. Must be called inside a Tokio runtime.
    pub fn start(config: EmitterConfig) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        config.validate()?;
        let key = config.api_key_file.as_deref().map(read_key).transpose()?;
        let channel = agentauth_grpc::client::channel(&config.url, key.as_ref())?;
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        let shared = Arc::new(Shared::default());
        if !spool.is_empty() {
            shared.transition(State::Spooling);
            tracing::info!(
                dir = %spool.dir().display(),
                bytes = spool.bytes(),
                "replaying audit events spooled by an earlier run"
            );
        }
        let (queue, receiver) = mpsc::channel(config.queue_capacity);
        let cancel = CancellationToken::new();
        let client = AppendClient::new(channel);
        let worker = Worker::new(
            &config,
            receiver,
            shared.clone(),
            cancel.clone(),
            client,
            spool,
        );
        let task = runtime.spawn(worker.run());
        Ok(Self {
            inner: Arc::new(Inner {
                queue,
                durability: config.durability,
                shared,
                cancel,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Queues `event` for audit-log. Never waits: an event that cannot be queued now is refused
    /// with the reason, and the caller decides whether to go on unaudited.
    pub fn emit(&self, event: Event) -> Result<(), EmitError> {
        let shared = &self.inner.shared;
        match shared.state() {
            State::Closed => return Err(EmitError::Closed),
            State::SpoolFull => return Err(EmitError::SpoolFull),
            State::Delivering | State::Spooling => {}
        }
        let wire = pb::Event::from(event);
        // The checks audit-log applies: a bad event fails here, not later with its whole batch.
        Event::check_wire(&wire)?;
        self.inner
            .queue
            .try_send(Message::Event(Frame::of(&wire), None))
            .map_err(|error| match error {
                TrySendError::Full(_) => EmitError::QueueFull,
                TrySendError::Closed(_) => EmitError::Closed,
            })?;
        Shared::count(&shared.emitted, 1);
        Ok(())
    }

    /// Queues `event` for audit-log, waiting while the queue is full (the worker is spooling
    /// slowly, or the spool is full and replay has not freed space yet): backpressure, never a
    /// dropped event; with `durability = "sync"`, also until the event is in the journal on
    /// disk. Fails for an invalid event, once the emitter is shut down, or when the journal
    /// cannot be written.
    pub async fn record(&self, event: Event) -> Result<(), EmitError> {
        if self.inner.shared.state() == State::Closed {
            return Err(EmitError::Closed);
        }
        let wire = pb::Event::from(event);
        Event::check_wire(&wire)?;
        let (journaled, durable) = match self.inner.durability {
            Durability::Async => (None, None),
            Durability::Sync => {
                let (done, durable) = oneshot::channel();
                (Some(done), Some(durable))
            }
        };
        self.inner
            .queue
            .send(Message::Event(Frame::of(&wire), journaled))
            .await
            .map_err(|_| EmitError::Closed)?;
        Shared::count(&self.inner.shared.emitted, 1);
        match durable {
            Some(durable) => durable.await.map_err(|_| EmitError::NotDurable),
            None => Ok(()),
        }
    }

    /// Whether the emitter keeps up with what is recorded: it takes events (see
    /// [`Emitter::is_healthy`]) and at least a tenth of its queue is free. A service reports
    /// itself unready while it does not, so its load balancer sends new calls elsewhere.
    pub fn keeps_up(&self) -> bool {
        let queue = &self.inner.queue;
        self.is_healthy() && queue.capacity() * 10 >= queue.max_capacity()
    }

    /// Waits until every event emitted before this call is acknowledged by audit-log, spooled or
    /// dead-lettered. While the spool is full this waits for it to drain: bound it with a timeout.
    pub async fn flush(&self) -> Result<(), EmitError> {
        let (done, flushed) = oneshot::channel();
        self.inner
            .queue
            .send(Message::Flush(done))
            .await
            .map_err(|_| EmitError::Closed)?;
        flushed.await.map_err(|_| EmitError::Closed)
    }

    /// Refuses new events, flushes for at most `grace`, then spools whatever is left and stops
    /// the task. Later calls return at once.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shared.close();
        if tokio::time::timeout(grace, self.flush()).await.is_err() {
            tracing::info!(
                ?grace,
                "audit events not delivered within the grace period are spooled"
            );
        }
        self.inner.cancel.cancel();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "audit emitter task failed");
        }
    }

    /// Where new events go now.
    pub fn state(&self) -> State {
        self.inner.shared.state()
    }

    /// Whether `emit` accepts events (unless the queue is momentarily full): audit-log or the
    /// spool takes them. A service that must not act unaudited refuses work while this is false.
    pub fn is_healthy(&self) -> bool {
        matches!(self.state(), State::Delivering | State::Spooling)
            && !self.inner.shared.journal_failing.load(Ordering::Acquire)
    }

    /// Event counts since start.
    pub fn stats(&self) -> Stats {
        let shared = &self.inner.shared;
        Stats {
            emitted: shared.emitted.load(Ordering::Relaxed),
            delivered: shared.delivered.load(Ordering::Relaxed),
            spooled: shared.spooled.load(Ordering::Relaxed),
            dead_lettered: shared.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

fn read_key(path: &Path) -> Result<ApiKey, StartError> {
    ApiKey::read_file(path).map_err(|source| StartError::ApiKey {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_from_a_document_and_rejects_unknown_keys() {
        let config: EmitterConfig = serde_json::from_str(
            r#"{"url": "http://audit-log:50053", "spool_dir": "/var/spool/audit", "flush_interval": "50ms"}"#,
        )
        .expect("valid");
        assert_eq!(config.flush_interval, Duration::from_millis(50));
        assert_eq!(config.batch_size, 500);
        assert!(config.validate().is_ok());
        let unknown = serde_json::from_str::<EmitterConfig>(r#"{"api_key": "secret"}"#);
        assert!(unknown.is_err(), "api_key is not a config key");
        let too_big = EmitterConfig {
            batch_size: MAX_BATCH + 1,
            ..EmitterConfig::default()
        };
        assert!(matches!(too_big.validate(), Err(StartError::Config(_))));
    }
}
