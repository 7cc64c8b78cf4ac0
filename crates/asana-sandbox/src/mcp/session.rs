//! Handshake-era sessions: opened by `initialize`, named by `Mcp-Session-Id`, bound to the user
//! and MCP app that opened them (a request for a session with another credential is answered as
//! if the session did not exist), ended by `DELETE`, the control API, or 30 idle minutes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Principal;
use crate::tokens::{CredentialKind, random_token};

/// A session nobody used for this long is gone (its id answers 404).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    user_gid: String,
    client_id: String,
}

impl Owner {
    /// The owner a request of `principal` may use sessions of: same user, same MCP app (so a
    /// refreshed token keeps its session).
    pub fn of(principal: &Principal) -> Self {
        let client_id = match &principal.credential {
            CredentialKind::OAuth { client_id, .. } => client_id.clone(),
            CredentialKind::Pat | CredentialKind::ServiceAccount => String::new(),
        };
        Self {
            user_gid: principal.user_gid.clone(),
            client_id,
        }
    }
}

#[derive(Debug)]
struct Session {
    owner: Owner,
    version: &'static str,
    last_seen: Instant,
    /// Cancelled when the session ends; its GET stream stops with it.
    ended: CancellationToken,
    /// The open GET stream, if any: its id and its own stop signal.
    stream: Option<(u64, CancellationToken)>,
}

impl Session {
    fn idle(&self, now: Instant) -> bool {
        self.stream.is_none() && now.duration_since(self.last_seen) >= IDLE_TIMEOUT
    }
}

/// An open GET stream of a session.
#[derive(Debug)]
pub struct Stream {
    pub id: u64,
    /// Cancelled when the session ends or a newer GET stream replaces this one.
    pub stop: CancellationToken,
}

/// Every live session, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    next_stream: AtomicU64,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sessions map without idle ones (which end now).
    fn live(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| {
            let keep = !s.idle(now);
            if !keep {
                s.ended.cancel();
            }
            keep
        });
        sessions
    }

    /// Opens a session at `version` and returns its id.
    pub fn open(&self, owner: Owner, version: &'static str) -> String {
        let id = random_token("");
        self.live().insert(
            id.clone(),
            Session {
                owner,
                version,
                last_seen: Instant::now(),
                ended: CancellationToken::new(),
                stream: None,
            },
        );
        id
    }

    /// The negotiated version of `owner`'s session `id`, marking it used; `None` when there is
    /// no such session (never opened, ended, expired, or someone else's).
    pub fn resume(&self, id: &str, owner: &Owner) -> Option<&'static str> {
        let mut sessions = self.live();
        let session = sessions.get_mut(id).filter(|s| s.owner == *owner)?;
        session.last_seen = Instant::now();
        Some(session.version)
    }

    /// Ends `owner`'s session `id`; false when there is none.
    pub fn end(&self, id: &str, owner: &Owner) -> bool {
        let mut sessions = self.live();
        if sessions.get(id).is_none_or(|s| s.owner != *owner) {
            return false;
        }
        if let Some(session) = sessions.remove(id) {
            session.ended.cancel();
        }
        true
    }

    /// Ends every session; returns how many there were.
    pub fn end_all(&self) -> usize {
        let mut sessions = self.lock();
        for session in sessions.values() {
            session.ended.cancel();
        }
        let count = sessions.len();
        sessions.clear();
        count
    }

    /// Registers a GET stream for `owner`'s session `id`, stopping the one it replaces (each
    /// message goes to exactly one stream, and a reconnecting client must not be refused).
    pub fn attach_stream(&self, id: &str, owner: &Owner) -> Option<Stream> {
        let mut sessions = self.live();
        let session = sessions.get_mut(id).filter(|s| s.owner == *owner)?;
        let stream = Stream {
            id: self.next_stream.fetch_add(1, Ordering::Relaxed),
            stop: session.ended.child_token(),
        };
        if let Some((_, previous)) = session.stream.replace((stream.id, stream.stop.clone())) {
            previous.cancel();
        }
        session.last_seen = Instant::now();
        Some(stream)
    }

    /// Forgets stream `stream_id` of session `id` if it is still the current one.
    pub fn detach_stream(&self, id: &str, stream_id: u64) {
        if let Some(session) = self.lock().get_mut(id)
            && session
                .stream
                .as_ref()
                .is_some_and(|(s, _)| *s == stream_id)
        {
            session.stream = None;
            session.last_seen = Instant::now();
        }
    }

    /// What the control API shows: owner, version and whether a GET stream is open (no ids:
    /// they are bearer-like).
    pub fn describe(&self) -> Vec<Value> {
        let mut list: Vec<Value> = self
            .live()
            .values()
            .map(|s| {
                json!({
                    "user_gid": s.owner.user_gid,
                    "client_id": s.owner.client_id,
                    "protocol_version": s.version,
                    "stream_open": s.stream.is_some(),
                })
            })
            .collect();
        list.sort_by_key(|v| v.to_string());
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(user: &str) -> Owner {
        Owner {
            user_gid: user.into(),
            client_id: "app".into(),
        }
    }

    #[test]
    fn sessions_belong_to_their_owner() {
        let sessions = Sessions::default();
        let id = sessions.open(owner("alice"), "2025-11-25");
        assert_eq!(sessions.resume(&id, &owner("alice")), Some("2025-11-25"));
        assert_eq!(sessions.resume(&id, &owner("bob")), None);
        assert!(!sessions.end(&id, &owner("bob")));
        assert!(sessions.end(&id, &owner("alice")));
        assert_eq!(sessions.resume(&id, &owner("alice")), None);
    }

    #[test]
    fn a_new_stream_replaces_the_old_and_ending_stops_both() {
        let sessions = Sessions::default();
        let id = sessions.open(owner("alice"), "2025-11-25");
        let first = sessions
            .attach_stream(&id, &owner("alice"))
            .expect("session exists");
        let second = sessions
            .attach_stream(&id, &owner("alice"))
            .expect("session exists");
        assert!(first.stop.is_cancelled());
        assert!(!second.stop.is_cancelled());
        sessions.detach_stream(&id, first.id);
        assert_eq!(sessions.describe()[0]["stream_open"], true);
        assert_eq!(sessions.end_all(), 1);
        assert!(second.stop.is_cancelled());
    }
}
