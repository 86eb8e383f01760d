//! Browser session tokens and signed media URLs. A token is minted by an API key and signed with HMAC-SHA256 by a
//! key the gateway makes on first start and keeps in its data directory (`session-keys.json`); it is checked with
//! no database read: its signature (against each key kept, so tokens survive a rotation), its expiry, and an
//! in-memory set of revoked sessions. The same keys sign media URLs, so an `<img>` or `<audio>` can open them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;
use switchyard_actors::engine::budget::{Budget, SharedBudget};
use switchyard_actors::engine::session::SharedLimits;

/// What every session token starts with (an API key starts with `sy_live_`).
pub const TOKEN_PREFIX: &str = "sy_st_";
const KEYS_FILE: &str = "session-keys.json";

/// What a token says, signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session's id (`ses_…`).
    pub sid: String,
    /// The API key that minted it.
    pub kid: String,
    pub ws: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// The most the session may spend, in millicredits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this gateway signed (malformed, forged or tampered with).
    Invalid,
    Expired,
    Revoked,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    id: String,
    secret: String,
}

/// The signing keys: the first signs, all verify.
struct Keys(Vec<(String, Vec<u8>)>);

impl Keys {
    fn from_stored(stored: Vec<StoredKey>, origin: &str) -> Result<Keys, String> {
        let keys = stored
            .into_iter()
            .map(|k| hex::decode(&k.secret).map(|secret| (k.id, secret)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{origin}: {e}"))?;
        if keys.is_empty() {
            return Err(format!("{origin}: no keys"));
        }
        Ok(Keys(keys))
    }

    fn load_or_create(data_dir: &Path) -> Result<Keys, String> {
        let path = data_dir.join(KEYS_FILE);
        let stored: Vec<StoredKey> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = vec![new_key()];
                write_keys(&path, &keys)?;
                keys
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Keys::from_stored(stored, &path.display().to_string())
    }

    fn mac(secret: &[u8], message: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        mac.update(message);
        mac
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        Self::mac(&self.0[0].1, message).finalize().into_bytes().to_vec()
    }

    /// Whether one of the keys signed `message` (compared in constant time).
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.iter().any(|(_, secret)| Self::mac(secret, message).verify_slice(signature).is_ok())
    }
}

fn new_key() -> StoredKey {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let mut id = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut id);
    StoredKey { id: format!("sk_{}", hex::encode(id)), secret: hex::encode(secret) }
}

fn write_keys(path: &Path, keys: &[StoredKey]) -> Result<(), String> {
    let text = serde_json::to_string_pretty(keys).map_err(|e| e.to_string())?;
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, text).map_err(|e| format!("{}: {e}", temp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A new set of signing keys as JSON, for gateways that keep them in their shared database (`Sessions::from_json`).
pub fn new_keys_json() -> String {
    serde_json::to_string(&vec![new_key()]).unwrap_or_default()
}

/// Makes a new signing key and keeps the newest old one: tokens and media URLs signed before still verify until
/// the next rotation. Takes effect when the gateway starts.
pub fn rotate(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join(KEYS_FILE);
    let stored: Vec<StoredKey> = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(_) => Vec::new(),
    };
    let (stored, id) = rotated(stored);
    write_keys(&path, &stored)?;
    Ok(id)
}

/// The same rotation of keys kept as JSON (`new_keys_json`'s, in a shared database): the new JSON and key id.
pub fn rotate_json(keys: &str) -> Result<(String, String), String> {
    let stored: Vec<StoredKey> = serde_json::from_str(keys).map_err(|e| format!("the shared session keys: {e}"))?;
    let (stored, id) = rotated(stored);
    Ok((serde_json::to_string(&stored).map_err(|e| e.to_string())?, id))
}

fn rotated(mut stored: Vec<StoredKey>) -> (Vec<StoredKey>, String) {
    let key = new_key();
    let id = key.id.clone();
    stored.insert(0, key);
    stored.truncate(2);
    (stored, id)
}

/// The gateway's sessions: signing, checking, revocation and spending caps.
pub struct Sessions {
    keys: Keys,
    /// Revoked sessions, with their expiry (after which the token fails on its own).
    revoked: DashMap<String, i64>,
    budgets: DashMap<String, Arc<Budget>>,
    /// With Redis: the caps are counted there, shared by every gateway.
    shared_budgets: Option<Arc<dyn SharedLimits>>,
}

impl Sessions {
    pub fn open(data_dir: &Path) -> Result<Sessions, String> {
        let keys = Keys::load_or_create(data_dir)?;
        Ok(Sessions { keys, revoked: DashMap::new(), budgets: DashMap::new(), shared_budgets: None })
    }

    /// Sessions signed with keys kept elsewhere (the database several gateways share), as `new_keys_json` made them.
    pub fn from_json(keys: &str) -> Result<Sessions, String> {
        let stored: Vec<StoredKey> = serde_json::from_str(keys).map_err(|e| format!("the shared session keys: {e}"))?;
        let keys = Keys::from_stored(stored, "the shared session keys")?;
        Ok(Sessions { keys, revoked: DashMap::new(), budgets: DashMap::new(), shared_budgets: None })
    }

    /// These sessions with their spending caps counted in `limits` (Redis), shared by every gateway on it.
    pub fn with_shared_budgets(mut self, limits: Option<Arc<dyn SharedLimits>>) -> Self {
        self.shared_budgets = limits;
        self
    }

    /// A signed token for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signed = format!("{TOKEN_PREFIX}{payload}");
        let signature = URL_SAFE_NO_PAD.encode(self.keys.sign(signed.as_bytes()));
        format!("{signed}.{signature}")
    }

    /// The claims of a token this gateway signed, unexpired at `now` and not revoked.
    pub fn check(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let payload = signed.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Invalid)?;
        if !self.keys.verify(signed.as_bytes(), &signature) {
            return Err(TokenError::Invalid);
        }
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if self.revoked.contains_key(&claims.sid) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    pub fn revoke(&self, id: &str, expires_at: i64) {
        self.revoked.insert(id.to_owned(), expires_at);
        self.budgets.remove(id);
    }

    /// Forgets revocations of sessions expired by `now` (their tokens fail on expiry anyway).
    pub fn sweep(&self, now: i64) {
        self.revoked.retain(|_, expires| *expires > now);
    }

    /// The spending cap of a session with `max` millicredits, created (from what it has spent) on first use; with
    /// shared budgets, counted in Redis for as long as the token (expiring at `exp`) lives.
    pub fn budget(&self, id: &str, max: i64, exp: i64, spent: impl FnOnce() -> i64) -> Arc<Budget> {
        let make = || {
            let Some(limits) = self.shared_budgets.clone() else { return Budget::new(max, spent()) };
            let left = u64::try_from(exp - crate::clock::now_unix()).unwrap_or(0);
            let ttl = std::time::Duration::from_secs(left.saturating_add(300));
            Budget::shared(max, spent(), SharedBudget { limits, session: id.to_owned(), ttl })
        };
        self.budgets.entry(id.to_owned()).or_insert_with(|| Arc::new(make())).clone()
    }

    pub fn has_budget(&self, id: &str) -> bool {
        self.budgets.contains_key(id)
    }

    /// A signature for a media URL: the workspace, the media and the expiry (Unix seconds).
    pub fn sign_media(&self, workspace_id: &str, media_ref: &str, expires: i64) -> String {
        URL_SAFE_NO_PAD.encode(self.keys.sign(media_message(workspace_id, media_ref, expires).as_bytes()))
    }

    pub fn verify_media(&self, workspace_id: &str, media_ref: &str, expires: i64, signature: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature)
            .is_ok_and(|sig| self.keys.verify(media_message(workspace_id, media_ref, expires).as_bytes(), &sig))
    }
}

fn media_message(workspace_id: &str, media_ref: &str, expires: i64) -> String {
    format!("media\n{workspace_id}\n{media_ref}\n{expires}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sid: "ses_1".into(),
            kid: "key_1".into(),
            ws: "ws_1".into(),
            exp,
            models: Some(vec!["gpt-4".into()]),
            max: Some(5_000),
            user: Some("ada".into()),
        }
    }

    #[test]
    fn tokens_verify_until_expiry_or_revocation_and_not_when_touched() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sessions = Sessions::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let token = sessions.mint(&claims(100));
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(sessions.check(&token, 50), Ok(claims(100)));
        assert_eq!(sessions.check(&token, 100), Err(TokenError::Expired));
        // Tampered payload (another expiry), and a signature from another gateway's key.
        let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(9_999)).unwrap_or_default());
        let (_, signature) = token.rsplit_once('.').unwrap_or_default();
        assert_eq!(sessions.check(&format!("{TOKEN_PREFIX}{forged_claims}.{signature}"), 50), Err(TokenError::Invalid));
        let other_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let other = Sessions::open(other_dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sessions.check(&other.mint(&claims(100)), 50), Err(TokenError::Invalid));
        assert_eq!(sessions.check("sy_st_garbage", 50), Err(TokenError::Invalid));
        sessions.revoke("ses_1", 100);
        assert_eq!(sessions.check(&token, 50), Err(TokenError::Revoked));
        sessions.sweep(200);
        assert_eq!(sessions.check(&token, 50), Ok(claims(100)));
    }

    #[test]
    fn a_rotation_keeps_the_previous_key_for_checking() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let before = Sessions::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let token = before.mint(&claims(100));
        let media = before.sign_media("ws_1", "med_1", 100);
        rotate(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let after = Sessions::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(after.check(&token, 50).is_ok());
        assert!(after.verify_media("ws_1", "med_1", 100, &media));
        assert!(!after.verify_media("ws_1", "med_2", 100, &media));
        assert!(!after.verify_media("ws_2", "med_1", 100, &media));
        assert_ne!(after.mint(&claims(100)), token, "the new key signs");
        rotate(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let third = Sessions::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(third.check(&token, 50), Err(TokenError::Invalid), "two rotations on, the first key is gone");
    }
}
