//! The emitter's background task: the only reader of the queue and the only user of the spool.
//! What it guarantees is described in [`crate::emitter`].

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::emitter::{Durability, EmitterConfig, Message, Shared, State};
use crate::spool::{Journal, Spool};
use crate::wire::{AppendClient, Events, Frame};

/// A batch is sent once its events encode to this much, far below gRPC's 4 MiB message limit.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether audit-log refused a batch for good, so that sending it again cannot succeed. Every
/// other code is worth retrying, and the spool keeps the events meanwhile.
fn permanent(code: Code) -> bool {
    match code {
        Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated => true,
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::NotFound
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => false,
    }
}

/// Events taken off the queue, waiting to be sent together.
#[derive(Debug, Default)]
struct Batch {
    events: Events,
    /// Flushes answered once these events, and every one before them, are settled.
    waiters: Vec<oneshot::Sender<()>>,
    /// When it is sent even if not full.
    due: Option<Instant>,
}

impl Batch {
    fn push(&mut self, event: &Frame, interval: Duration) {
        self.due.get_or_insert_with(|| Instant::now() + interval);
        self.events.push(event);
    }

    fn is_full(&self, size: usize) -> bool {
        self.events.len() >= size || self.events.bytes().len() >= MAX_BATCH_BYTES
    }

    /// Answers the flushes waiting for this batch.
    fn settled(self) {
        for waiter in self.waiters {
            let _ = waiter.send(()); // a flush that gave up no longer listens
        }
    }
}

/// Jittered exponential backoff for replay.
#[derive(Debug)]
struct Backoff {
    delay: Duration,
    next: Instant,
}

impl Backoff {
    fn new() -> Self {
        Self {
            delay: RETRY_MIN,
            next: Instant::now(),
        }
    }

    fn reset(&mut self) {
        *self = Self::new();
    }

    /// Schedules the next attempt between half and all of the current delay, then doubles it.
    fn fail(&mut self) {
        let half = self.delay / 2;
        let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        let jitter = Duration::from_nanos(RandomState::new().hash_one(()) % span);
        self.next = Instant::now() + half + jitter;
        self.delay = (self.delay * 2).min(RETRY_MAX);
    }
}

/// Resolves at `when`, or never.
async fn at(when: Option<Instant>) {
    match when {
        Some(when) => sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// The background task.
pub(crate) struct Worker {
    queue: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    client: AppendClient,
    spool: Spool,
    batch: Batch,
    /// A batch the spool could not take; the queue is not read until it has a place.
    held: Option<Batch>,
    /// `durability = "sync"`: the journal, how many bytes of the current batch are in it, and
    /// who waits for the rest to be.
    journal: Option<Journal>,
    journaled: usize,
    unjournaled: Vec<oneshot::Sender<()>>,
    retry: Backoff,
    batch_size: usize,
    flush_interval: Duration,
    request_timeout: Duration,
}

impl Worker {
    pub(crate) fn new(
        config: &EmitterConfig,
        queue: mpsc::Receiver<Message>,
        shared: Arc<Shared>,
        cancel: CancellationToken,
        client: AppendClient,
        spool: Spool,
    ) -> Self {
        Self {
            queue,
            shared,
            cancel,
            client,
            spool,
            batch: Batch::default(),
            held: None,
            journal: (config.durability == Durability::Sync)
                .then(|| Journal::new(&config.spool_dir)),
            journaled: 0,
            unjournaled: Vec::new(),
            retry: Backoff::new(),
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            request_timeout: config.request_timeout,
        }
    }

    pub(crate) async fn run(mut self) {
        match self.spool.recover_journal().await {
            Ok(0) => {}
            Ok(events) => {
                tracing::info!(events, "replaying the audit journal a crashed run left");
                self.shared.transition(State::Spooling);
            }
            Err(error) => {
                tracing::error!(%error, "cannot move the audit journal to the spool; it is kept for the next start")
            }
        }
        loop {
            let due = self.batch.due;
            let retry = self.spooling().then_some(self.retry.next);
            tokio::select! {
                () = self.cancel.cancelled() => break,
                message = self.queue.recv(), if self.held.is_none() => match message {
                    Some(Message::Event(event, waiter)) => {
                        self.batch.push(&event, self.flush_interval);
                        self.unjournaled.extend(waiter);
                        // Group commit: one journal sync for every event that is waiting now.
                        if self.journal.is_some() && self.queue.is_empty() {
                            self.journal_batch().await;
                        }
                        if self.batch.is_full(self.batch_size) {
                            self.dispatch().await;
                        }
                    }
                    Some(Message::Flush(waiter)) => {
                        self.batch.waiters.push(waiter);
                        self.dispatch().await;
                    }
                    None => break,
                },
                () = at(due) => self.dispatch().await,
                () = at(retry) => self.replay().await,
            }
        }
        self.stop().await;
    }

    /// Whether new batches must go behind spooled ones.
    fn spooling(&self) -> bool {
        !self.spool.is_empty() || self.held.is_some()
    }

    /// Writes the current batch's events not yet in the journal, and answers who waits for
    /// them. When the journal cannot be written, they are answered too (the events stay in
    /// memory and are delivered or spooled as usual) with the failure, and the emitter reports
    /// itself unhealthy until a write succeeds.
    async fn journal_batch(&mut self) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        let fresh = &self.batch.events.bytes()[self.journaled..];
        let written = if fresh.is_empty() {
            Ok(())
        } else {
            journal.append(fresh).await
        };
        let waiters = std::mem::take(&mut self.unjournaled);
        match written {
            Ok(()) => {
                self.journaled = self.batch.events.bytes().len();
                if self
                    .shared
                    .journal_failing
                    .swap(false, std::sync::atomic::Ordering::AcqRel)
                {
                    tracing::info!("the audit journal is written again");
                }
                for waiter in waiters {
                    let _ = waiter.send(());
                }
            }
            Err(error) => {
                if !self
                    .shared
                    .journal_failing
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    tracing::error!(%error, "cannot write the audit journal; refusing new work until it can");
                }
                drop(waiters);
            }
        }
    }

    /// Empties the journal once nothing in it is unsettled.
    async fn settle_journal(&mut self) {
        let idle = self.batch.events.is_empty() && self.held.is_none();
        if let Some(journal) = &mut self.journal
            && idle
            && let Err(error) = journal.clear().await
        {
            tracing::warn!(%error, "cannot empty the audit journal; a restart re-sends what it holds");
        }
    }

    /// Sends the current batch, or spools it behind the ones already waiting.
    async fn dispatch(&mut self) {
        self.journal_batch().await;
        self.journaled = 0;
        let batch = std::mem::take(&mut self.batch);
        if batch.events.is_empty() {
            return batch.settled();
        }
        self.send_or_spool(batch).await;
        self.settle_journal().await;
    }

    async fn send_or_spool(&mut self, batch: Batch) {
        if self.spooling() {
            return self.spool(batch).await;
        }
        match self.send(&batch.events).await {
            Ok(()) => {
                Shared::count(&self.shared.delivered, batch.events.len());
                batch.settled();
            }
            Err(status)
                if permanent(status.code()) && self.dead_letter(&batch.events, &status).await =>
            {
                batch.settled();
            }
            Err(status) => {
                if self.shared.transition(State::Spooling) == State::Delivering {
                    tracing::warn!(
                        code = ?status.code(),
                        message = status.message(),
                        "audit-log unreachable; spooling audit events"
                    );
                }
                self.retry.fail();
                self.spool(batch).await;
            }
        }
    }

    async fn spool(&mut self, batch: Batch) {
        match self.spool.append(&batch.events, false).await {
            Ok(()) => {
                Shared::count(&self.shared.spooled, batch.events.len());
                if self.shared.transition(State::Spooling) == State::SpoolFull {
                    tracing::info!("audit spool has room again; accepting audit events");
                }
                batch.settled();
            }
            Err(error) => {
                if self.shared.transition(State::SpoolFull) != State::SpoolFull {
                    tracing::error!(%error, "cannot spool audit events; refusing new ones until the spool drains");
                }
                self.held = Some(batch);
            }
        }
    }

    /// Sends the oldest spooled batch, then gives a held batch another try at the spool.
    async fn replay(&mut self) {
        let progress = match self.spool.head().await {
            Ok(Some(events)) => self.replay_batch(events).await,
            Ok(None) => false,
            Err(error) => {
                tracing::error!(%error, dir = %self.spool.dir().display(), "cannot read the audit spool");
                false
            }
        };
        if let Some(batch) = self.held.take() {
            self.spool(batch).await;
        }
        if progress {
            self.retry.reset();
        } else {
            self.retry.fail();
        }
        if !self.spooling() && self.shared.transition(State::Delivering) != State::Delivering {
            tracing::info!("audit spool drained; sending audit events directly again");
        }
        self.settle_journal().await;
    }

    /// Whether the batch is settled (delivered or dead-lettered) and off the spool.
    async fn replay_batch(&mut self, events: Events) -> bool {
        match self.send(&events).await {
            Ok(()) => Shared::count(&self.shared.delivered, events.len()),
            Err(status) if permanent(status.code()) => {
                if !self.dead_letter(&events, &status).await {
                    return false;
                }
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), retry_within = ?self.retry.delay, "audit-log still unreachable");
                return false;
            }
        }
        if let Err(error) = self.spool.ack().await {
            tracing::error!(%error, "cannot delete a replayed audit spool segment; the next start re-sends it");
        }
        true
    }

    async fn send(&mut self, events: &Events) -> Result<(), Status> {
        let append = tokio::time::timeout(self.request_timeout, self.client.append(events));
        tokio::select! {
            answer = append => match answer {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(status),
                Err(_) => Err(Status::deadline_exceeded("no answer within request_timeout")),
            },
            () = self.cancel.cancelled() => Err(Status::cancelled("the emitter is shutting down")),
        }
    }

    /// Moves a batch audit-log refused for good to the dead-letter file; false if that failed.
    async fn dead_letter(&mut self, events: &Events, status: &Status) -> bool {
        match self.spool.dead_letter(events).await {
            Ok(file) => {
                Shared::count(&self.shared.dead_lettered, events.len());
                // The status message may quote the batch (a tenant, a field): only the code is logged.
                tracing::error!(
                    code = ?status.code(),
                    events = events.len(),
                    file = %file.display(),
                    "audit-log refused a batch of audit events; moved it to the dead-letter file"
                );
                true
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    code = ?status.code(),
                    events = events.len(),
                    "audit-log refused a batch of audit events and the dead-letter file cannot be written; keeping it"
                );
                false
            }
        }
    }

    /// Spools everything not yet settled, over the spool's limit if need be, in order.
    async fn stop(mut self) {
        self.shared.close();
        self.queue.close();
        let mut batches: Vec<Batch> = self.held.take().into_iter().collect();
        let mut current = std::mem::take(&mut self.batch);
        while let Ok(message) = self.queue.try_recv() {
            match message {
                Message::Event(event, waiter) => {
                    current.push(&event, Duration::ZERO);
                    self.unjournaled.extend(waiter);
                }
                Message::Flush(waiter) => current.waiters.push(waiter),
            }
            if current.is_full(self.batch_size) {
                batches.push(std::mem::take(&mut current));
            }
        }
        batches.push(current);
        let mut spooled = 0;
        for batch in batches {
            let events = batch.events.len();
            if events > 0 {
                if let Err(error) = self.spool.append(&batch.events, true).await {
                    tracing::error!(%error, events, "cannot spool audit events at shutdown; they are lost");
                    continue;
                }
                Shared::count(&self.shared.spooled, events);
                spooled += events;
            }
            batch.settled();
        }
        if spooled > 0 {
            tracing::info!(events = spooled, "spooled audit events left at shutdown");
        }
        // Everything is spooled: whoever still waited for the journal may go on.
        for waiter in std::mem::take(&mut self.unjournaled) {
            let _ = waiter.send(());
        }
        if let Some(journal) = &mut self.journal
            && let Err(error) = journal.clear().await
        {
            tracing::warn!(%error, "cannot empty the audit journal; the next start re-sends what it holds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_its_cap() {
        let mut backoff = Backoff::new();
        for _ in 0..10 {
            let before = Instant::now();
            let delay = backoff.delay;
            backoff.fail();
            assert!(backoff.next >= before + delay / 2);
            assert!(backoff.next <= Instant::now() + delay);
        }
        assert_eq!(backoff.delay, RETRY_MAX);
        backoff.reset();
        assert_eq!(backoff.delay, RETRY_MIN);
    }

    #[test]
    fn only_codes_about_the_batch_itself_are_permanent() {
        assert!(permanent(Code::InvalidArgument));
        assert!(permanent(Code::PermissionDenied));
        assert!(permanent(Code::Unauthenticated));
        assert!(!permanent(Code::Unavailable));
        assert!(!permanent(Code::DeadlineExceeded));
        assert!(!permanent(Code::Unimplemented));
    }
}
