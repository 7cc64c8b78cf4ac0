//! The emitter's spool: batches audit-log could not take yet, on local disk, oldest first.
//! The format is described in [`crate::emitter`].

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::emitter::StartError;
use crate::wire::Events;

/// A segment takes no more appends once it holds this much, so replay reads a bounded amount.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
const SEGMENT_SUFFIX: &str = ".seg";
const DEAD_LETTER: &str = "dead-letter";
const LOCK: &str = "lock";
const JOURNAL: &str = "journal";

/// Why a batch was not spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    #[error("the spool holds {bytes} bytes and may hold {max}")]
    Full { bytes: u64, max: u64 },
    #[error("cannot write the spool: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
struct Segment {
    sequence: u64,
    bytes: u64,
}

/// The spool directory, locked for one emitter.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Oldest first; the last one may still take appends.
    segments: VecDeque<Segment>,
    bytes: u64,
    /// The sequence of the segment appends go to, until it is full or replay starts on it.
    active: Option<u64>,
    next_sequence: u64,
    /// The batches of the oldest segment not yet acknowledged, once it has been read.
    loaded: Option<VecDeque<Events>>,
    _lock: File,
}

impl Spool {
    /// Creates or opens `dir`, takes its lock and finds the segments an earlier run left.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Self, StartError> {
        let failed = |source| StartError::Spool {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(failed)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(failed)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StartError::Locked {
                    path: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(failed(source)),
        }
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(failed)? {
            let entry = entry.map_err(failed)?;
            let name = entry.file_name();
            let sequence = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|stem| stem.parse::<u64>().ok());
            if let Some(sequence) = sequence {
                let bytes = entry.metadata().map_err(failed)?.len();
                segments.push(Segment { sequence, bytes });
            }
        }
        segments.sort_by_key(|segment| segment.sequence);
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            bytes: segments.iter().map(|segment| segment.bytes).sum(),
            next_sequence: segments.last().map_or(1, |segment| segment.sequence + 1),
            segments: segments.into(),
            active: None,
            loaded: None,
            _lock: lock,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn segment_path(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:020}{SEGMENT_SUFFIX}"))
    }

    /// Appends one batch as a record and syncs it to disk. Refused when the spool would exceed
    /// its limit, unless it is empty (a batch must always fit somewhere) or `force` is set.
    pub(crate) async fn append(&mut self, events: &Events, force: bool) -> Result<(), AppendError> {
        let record = record(events.bytes())?;
        let len = record.len() as u64;
        if !force && self.bytes > 0 && self.bytes + len > self.max_bytes {
            return Err(AppendError::Full {
                bytes: self.bytes,
                max: self.max_bytes,
            });
        }
        let open = self.active.filter(|_| {
            self.segments
                .back()
                .is_some_and(|last| last.bytes < SEGMENT_BYTES)
        });
        let sequence = open.unwrap_or(self.next_sequence);
        if open.is_none() {
            self.next_sequence += 1;
        }
        let (path, dir) = (self.segment_path(sequence), self.dir.clone());
        let written = blocking(move || append_record(&path, &dir, &record, open.is_none())).await;
        if let Err(error) = written {
            // The segment may end in a torn record now: later appends go to a fresh one.
            self.active = None;
            return Err(error.into());
        }
        if open.is_none() {
            self.segments.push_back(Segment { sequence, bytes: 0 });
            self.active = Some(sequence);
        }
        if let Some(last) = self.segments.back_mut() {
            last.bytes += len;
        }
        self.bytes += len;
        Ok(())
    }

    /// The oldest batch not yet acknowledged, reading the oldest segment when needed.
    pub(crate) async fn head(&mut self) -> io::Result<Option<Events>> {
        loop {
            if let Some(loaded) = &self.loaded {
                match loaded.front() {
                    Some(batch) => return Ok(Some(batch.clone())),
                    None => self.remove_oldest().await?,
                }
                continue;
            }
            let Some(oldest) = self.segments.front() else {
                return Ok(None);
            };
            let sequence = oldest.sequence;
            if self.active == Some(sequence) {
                self.active = None; // replay reads only segments that no longer change
            }
            let path = self.segment_path(sequence);
            let (batches, unreadable) = blocking(move || read_segment(&path)).await?;
            if unreadable > 0 {
                tracing::error!(
                    segment = sequence,
                    bytes = unreadable,
                    "audit spool segment ends in a torn or unreadable record; skipping those bytes"
                );
            }
            self.loaded = Some(batches.into());
        }
    }

    /// Marks the batch [`Spool::head`] returned as delivered; deletes its segment after the last.
    pub(crate) async fn ack(&mut self) -> io::Result<()> {
        match &mut self.loaded {
            Some(loaded) => {
                loaded.pop_front();
                if loaded.is_empty() {
                    return self.remove_oldest().await;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Forgets the oldest segment and deletes its file. If the delete fails, the file is replayed
    /// again by the next emitter on this directory, which is harmless.
    async fn remove_oldest(&mut self) -> io::Result<()> {
        self.loaded = None;
        let Some(oldest) = self.segments.pop_front() else {
            return Ok(());
        };
        self.bytes = self.bytes.saturating_sub(oldest.bytes);
        let path = self.segment_path(oldest.sequence);
        blocking(move || fs::remove_file(path)).await
    }

    /// Moves what a crashed run left in its journal (`durability = "sync"`) to the spool, so it
    /// is replayed before anything new, and empties the journal. Events of it that audit-log
    /// already has are stored once: appends are idempotent by event id.
    pub(crate) async fn recover_journal(&mut self) -> io::Result<usize> {
        let path = self.dir.join(JOURNAL);
        if !path.exists() {
            return Ok(0);
        }
        let read = path.clone();
        let (batches, unreadable) = blocking(move || read_segment(&read)).await?;
        if unreadable > 0 {
            tracing::warn!(
                bytes = unreadable,
                "the audit journal ends in a torn record (a crash while writing it); skipping those bytes"
            );
        }
        let mut events = 0;
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            events += batch.len();
            self.append(&batch, true).await.map_err(|e| match e {
                AppendError::Io(error) => error,
                full @ AppendError::Full { .. } => io::Error::other(full),
            })?;
        }
        blocking(move || File::create(path).and_then(|f| f.sync_all())).await?;
        Ok(events)
    }

    /// Appends a batch audit-log refused for good to the dead-letter file; returns its path.
    pub(crate) async fn dead_letter(&self, events: &Events) -> io::Result<PathBuf> {
        let record = record(events.bytes())?;
        let (path, dir) = (self.dir.join(DEAD_LETTER), self.dir.clone());
        let file = path.clone();
        blocking(move || append_record(&file, &dir, &record, !file.exists())).await?;
        Ok(path)
    }
}

/// One record: a 4-byte big-endian length, then `body`, an encoded `AppendRequest`.
fn record(body: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut record = Vec::with_capacity(4 + body.len());
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(body);
    Ok(record)
}

/// The batches of a segment, and how many bytes at its end could not be read.
fn read_segment(path: &Path) -> io::Result<(Vec<Events>, usize)> {
    let bytes = fs::read(path)?;
    let mut rest = bytes.as_slice();
    let mut batches = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some(events) = tail.get(..len).and_then(Events::decode) else {
            break;
        };
        batches.push(events);
        rest = &tail[len..];
    }
    Ok((batches, rest.len()))
}

fn append_record(path: &Path, dir: &Path, record: &[u8], new: bool) -> io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(record)?;
    file.sync_data()?;
    if new {
        // Make the new file's directory entry durable too.
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Runs file work on the blocking pool, off the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// The write-ahead journal of `durability = "sync"`: every event is in it, synced to disk,
/// before the service that recorded it answers, until the event is delivered or spooled.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    dir: PathBuf,
    /// Whether the journal holds anything (so it must be emptied once that is settled).
    dirty: bool,
}

impl Journal {
    pub(crate) fn new(spool_dir: &Path) -> Self {
        Self {
            path: spool_dir.join(JOURNAL),
            dir: spool_dir.to_owned(),
            dirty: true,
        }
    }

    /// Appends `body`, encoded events, as one record and syncs it: many waiting calls share
    /// one sync.
    pub(crate) async fn append(&mut self, body: &[u8]) -> io::Result<()> {
        let record = record(body)?;
        let (path, dir) = (self.path.clone(), self.dir.clone());
        let new = !path.exists();
        blocking(move || append_record(&path, &dir, &record, new)).await?;
        self.dirty = true;
        Ok(())
    }

    /// Empties the journal: everything in it is delivered or spooled.
    pub(crate) async fn clear(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let path = self.path.clone();
        blocking(move || match OpenOptions::new().write(true).open(&path) {
            Ok(file) => file.set_len(0),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        })
        .await?;
        self.dirty = false;
        Ok(())
    }
}
