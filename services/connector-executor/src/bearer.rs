//! The bearer of a virtual MCP session: signed claims any replica verifies without a lookup.
//!
//! `amcp1.<claims>.<mac>`, both parts unpadded base64url: the claims are JSON (session id,
//! virtual server, tenant, identifier, minter, expiry, signing key id), the MAC is HMAC-SHA256
//! under the named key over `amcp1.` and the encoded claims. Several keys verify at once and
//! the first of them signs, so a new key is added in front of the old one and the old one is
//! dropped once the last bearer it signed has expired: live sessions survive a rotation. A
//! bearer is never an Asana token and never leaves the response that minted it.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "amcp1.";
/// The longest bearer read at all: a minted one is a few hundred bytes.
const MAX_BEARER_BYTES: usize = 4096;
/// The least key material accepted, in bytes.
const MIN_KEY_BYTES: usize = 32;

/// `[[virtual_mcp.signing_keys]]`: a key id and the file holding the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Named in every bearer the key signs.
    pub id: String,
    /// At least 32 bytes of secret (surrounding whitespace is ignored).
    pub key_file: PathBuf,
}

/// What a bearer says: whose session it is and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session's id (a UUIDv7), also in its URL.
    pub sid: String,
    /// The virtual server it may use.
    pub srv: String,
    /// The end user's tenant and identifier.
    pub ten: String,
    pub idn: String,
    /// The caller that minted it.
    pub by: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
}

/// Why a bearer was not accepted; none of them says more than that to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the bearer is malformed")]
    Malformed,
    #[error("the bearer's signature does not verify")]
    BadSignature,
    #[error("the bearer has expired")]
    Expired,
}

/// The keys that sign and verify bearers.
pub struct Keys {
    /// `(id, key)`, the signing key first.
    keys: Vec<(String, Vec<u8>)>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id))
            .finish()
    }
}

/// Key ids are letters, digits and '-', each named once.
pub fn check_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "virtual_mcp.signing_keys: key id `{id}` must be letters, digits and '-'"
            ));
        }
        if !seen.insert(id) {
            return Err(format!(
                "virtual_mcp.signing_keys: key id `{id}` appears twice"
            ));
        }
    }
    Ok(())
}

impl Keys {
    /// Reads every configured key; fails naming the key that is missing, short or repeated.
    pub fn load(configs: &[KeyConfig]) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(configs.len());
        for config in configs {
            let bytes = std::fs::read(&config.key_file).map_err(|e| {
                format!(
                    "virtual_mcp.signing_keys `{}`: cannot read {}: {e}",
                    config.id,
                    config.key_file.display()
                )
            })?;
            keys.push((config.id.clone(), bytes.trim_ascii().to_vec()));
        }
        Self::new(keys)
    }

    /// Keys from memory, the signing key first.
    pub fn new(keys: Vec<(String, Vec<u8>)>) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("virtual_mcp.signing_keys must name at least one key".to_owned());
        }
        check_ids(keys.iter().map(|(id, _)| id.as_str()))?;
        for (id, key) in &keys {
            if key.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "virtual_mcp.signing_keys `{id}`: the key must hold at least {MIN_KEY_BYTES} bytes"
                ));
            }
        }
        Ok(Self { keys })
    }

    /// The id of the key that signs.
    pub fn signing_id(&self) -> &str {
        &self.keys[0].0
    }

    /// A bearer for `claims`, signed with the first key.
    pub fn sign(&self, claims: &Claims) -> String {
        let (id, key) = &self.keys[0];
        let signed = Signed { kid: id, claims };
        // Claims are plain strings and a number: serializing them cannot fail.
        let json = serde_json::to_vec(&signed).unwrap_or_default();
        let mut bearer = String::from(PREFIX);
        URL_SAFE_NO_PAD.encode_string(json, &mut bearer);
        let mac = mac(key, &bearer).finalize().into_bytes();
        bearer.push('.');
        URL_SAFE_NO_PAD.encode_string(mac, &mut bearer);
        bearer
    }

    /// The claims of `bearer` if a configured key signed it and it has not expired at `now`
    /// (seconds since the Unix epoch).
    pub fn verify(&self, bearer: &str, now: i64) -> Result<Claims, Rejected> {
        if bearer.len() > MAX_BEARER_BYTES {
            return Err(Rejected::Malformed);
        }
        let (signed_part, mac_part) = bearer.rsplit_once('.').ok_or(Rejected::Malformed)?;
        let encoded = signed_part
            .strip_prefix(PREFIX)
            .ok_or(Rejected::Malformed)?;
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| Rejected::Malformed)?;
        let expected = URL_SAFE_NO_PAD
            .decode(mac_part)
            .map_err(|_| Rejected::Malformed)?;
        let signed: Owned = serde_json::from_slice(&json).map_err(|_| Rejected::Malformed)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == signed.kid)
            .ok_or(Rejected::BadSignature)?;
        mac(key, signed_part)
            .verify_slice(&expected)
            .map_err(|_| Rejected::BadSignature)?;
        if signed.claims.exp <= now {
            return Err(Rejected::Expired);
        }
        Ok(signed.claims)
    }
}

impl Keys {
    /// A new protocol session id (`Mcp-Session-Id`) for the session `sid`:
    /// `<nonce>.<tag>`, the tag an HMAC of both under the signing key, so any replica tells
    /// an id it issued for this bearer's session from any other without a lookup.
    pub fn protocol_session(&self, sid: &str) -> String {
        let nonce = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(protocol_tag(&self.keys[0].1, sid, &nonce));
        format!("{nonce}.{tag}")
    }

    /// Whether `id` is a protocol session id issued for the session `sid` (under any key).
    pub fn is_protocol_session(&self, sid: &str, id: &str) -> bool {
        let Some((nonce, tag)) = id.split_once('.') else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        tag.len() == PROTOCOL_TAG_BYTES
            && self.keys.iter().any(|(_, key)| {
                protocol_mac(key, sid, nonce)
                    .verify_truncated_left(&tag)
                    .is_ok()
            })
    }
}

/// The bytes of a protocol session id's tag.
const PROTOCOL_TAG_BYTES: usize = 16;

fn protocol_mac(key: &[u8], sid: &str, nonce: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(b"amcp1 protocol session\0");
    mac.update(sid.as_bytes());
    mac.update(b"\0");
    mac.update(nonce.as_bytes());
    mac
}

fn protocol_tag(key: &[u8], sid: &str, nonce: &str) -> Vec<u8> {
    protocol_mac(key, sid, nonce).finalize().into_bytes()[..PROTOCOL_TAG_BYTES].to_vec()
}

fn mac(key: &[u8], signed_part: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(signed_part.as_bytes());
    mac
}

#[derive(Serialize)]
struct Signed<'a> {
    kid: &'a str,
    #[serde(flatten)]
    claims: &'a Claims,
}

#[derive(Deserialize)]
struct Owned {
    kid: String,
    #[serde(flatten)]
    claims: Claims,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sid: "0190a000-0000-7000-8000-000000000001".into(),
            srv: "task-reader".into(),
            ten: "acme".into(),
            idn: "alice".into(),
            by: "agent-platform".into(),
            exp,
        }
    }

    fn keys(ids: &[&str]) -> Keys {
        Keys::new(
            ids.iter()
                .map(|id| {
                    (
                        (*id).to_owned(),
                        format!("{id}-secret-of-at-least-32-bytes!!").into_bytes(),
                    )
                })
                .collect(),
        )
        .expect("keys")
    }

    #[test]
    fn a_bearer_verifies_until_it_expires_and_names_its_claims_only() {
        let keys = keys(&["k1"]);
        let bearer = keys.sign(&claims(1_000));
        assert!(bearer.starts_with("amcp1."));
        assert_eq!(keys.verify(&bearer, 999), Ok(claims(1_000)));
        assert_eq!(keys.verify(&bearer, 1_000), Err(Rejected::Expired));
        assert!(!bearer.contains("secret"));
    }

    #[test]
    fn a_changed_or_foreign_bearer_is_refused() {
        let keys = keys(&["k1"]);
        let bearer = keys.sign(&claims(1_000));
        let oversized = format!("{bearer}{}", "A".repeat(MAX_BEARER_BYTES));
        assert_eq!(keys.verify(&oversized, 0), Err(Rejected::Malformed));
        let (body, mac) = bearer.rsplit_once('.').expect("two parts");
        // Other claims under the same MAC: alice's session turned into bob's.
        let forged_claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Signed {
                kid: "k1",
                claims: &Claims {
                    idn: "bob".into(),
                    ..claims(1_000)
                },
            })
            .expect("json"),
        );
        let forged = format!("{PREFIX}{forged_claims}.{mac}");
        assert_eq!(keys.verify(&forged, 0), Err(Rejected::BadSignature));
        assert_eq!(
            keys.verify(&format!("{body}.AAAA"), 0),
            Err(Rejected::BadSignature)
        );
        let foreign = Keys::new(vec![(
            "k1".into(),
            b"another-key-of-at-least-32-bytes!!".to_vec(),
        )])
        .expect("keys")
        .sign(&claims(1_000));
        assert_eq!(keys.verify(&foreign, 0), Err(Rejected::BadSignature));
        for malformed in ["", "amcp1.", "amcp1.x.y", "Bearer x", "amcp2.e30.AAAA"] {
            assert_eq!(
                keys.verify(malformed, 0),
                Err(Rejected::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn a_rotation_keeps_bearers_of_the_old_key_and_signs_with_the_new() {
        let old = keys(&["k1"]);
        let before = old.sign(&claims(1_000));
        let rotated = keys(&["k2", "k1"]);
        assert_eq!(rotated.verify(&before, 0), Ok(claims(1_000)));
        let after = rotated.sign(&claims(1_000));
        assert_eq!(old.verify(&after, 0), Err(Rejected::BadSignature));
        let retired = keys(&["k2"]);
        assert_eq!(retired.verify(&before, 0), Err(Rejected::BadSignature));
        assert_eq!(retired.verify(&after, 0), Ok(claims(1_000)));
    }

    #[test]
    fn keys_must_be_long_named_and_distinct() {
        assert!(Keys::new(Vec::new()).is_err());
        assert!(Keys::new(vec![("k1".into(), b"short".to_vec())]).is_err());
        assert!(Keys::new(vec![("k 1".into(), vec![7; 32])]).is_err());
        assert!(Keys::new(vec![("k1".into(), vec![7; 32]), ("k1".into(), vec![8; 32])]).is_err());
        assert!(!format!("{:?}", keys(&["k1"])).contains("secret"));
    }

    #[test]
    fn a_protocol_session_id_holds_only_for_the_session_it_was_issued_for() {
        let old = keys(&["k1"]);
        let sid = "0190a000-0000-7000-8000-000000000001";
        let id = old.protocol_session(sid);
        assert!(old.is_protocol_session(sid, &id));
        assert_ne!(
            old.protocol_session(sid),
            id,
            "each initialize gets a new id"
        );
        assert!(!old.is_protocol_session("0190a000-0000-7000-8000-000000000002", &id));
        let (nonce, tag) = id.split_once('.').expect("nonce.tag");
        let mut forged = tag.to_owned();
        forged.replace_range(..1, if tag.starts_with('A') { "B" } else { "A" });
        for bad in [
            format!("{nonce}.{forged}"),
            format!("x{nonce}.{tag}"),
            nonce.to_owned(),
            format!("{nonce}.{}", &tag[..tag.len() - 2]),
            String::new(),
        ] {
            assert!(!old.is_protocol_session(sid, &bad), "{bad}");
        }
        assert!(
            keys(&["k2", "k1"]).is_protocol_session(sid, &id),
            "survives a rotation"
        );
        assert!(!keys(&["k2"]).is_protocol_session(sid, &id));
    }
}
