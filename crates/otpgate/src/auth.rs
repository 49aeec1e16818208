//! API keys: how they look, how they are stored, how a request is authenticated.
//!
//! A key reads `otpg_<id>_<secret>`: `otpg_` makes it recognisable to secret
//! scanners, `<id>` (12 base32 characters) is public and names the row, `<secret>`
//! is 32 bytes from the operating system's CSPRNG in unpadded base64url. Only the
//! SHA-256 of the whole key is stored; a fast hash is right here because the key
//! carries 256 random bits (nothing to brute-force), and it is compared with
//! `subtle`'s constant-time equality. Revocation takes effect at once, on every
//! node: every route reads the key's row on each request, except the send
//! route, which authenticates from a [`KeyCache`] of keys that verified
//! before, because the store reads the key's row again inside the
//! transaction that accepts the send and refuses a revoked key there
//! (`AcceptError::KeyRevoked`, answered 401 like any invalid key). So the
//! hottest route costs no key read of its own and a revoked key still sends
//! nothing. `last_used` is gathered in memory and written in bulk every few
//! seconds instead of once per request.
//!
//! Each key has [`Scopes`]: what it may do. A key gets `send`, `verify` and
//! `read` unless asked otherwise; `account` (managing keys and the webhook) is
//! only given on request. Which scope each route needs is decided in one table,
//! `api::extract::required_scope`.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use base64::Engine;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use otp_store::{
    AccountId, ApiKeyRecord, Micros, NewApiKey, Scope, Scopes, SharedStore, StoreError,
};

/// The fixed start of every key.
pub const KEY_PREFIX: &str = "otpg_";
const ID_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const ID_LEN: usize = 12;

/// A freshly made key: the full text (shown once) and what the store keeps.
pub struct IssuedKey {
    pub plaintext: String,
    pub record: NewApiKey,
}

/// Makes a new key for an account with the default scopes (`send`, `verify`,
/// `read`).
pub fn issue_key(account_id: AccountId, label: Option<String>) -> IssuedKey {
    issue_key_with_scopes(account_id, label, Scopes::DEFAULT)
}

/// Makes a new key for an account that may do what `scopes` allow.
pub fn issue_key_with_scopes(
    account_id: AccountId,
    label: Option<String>,
    scopes: Scopes,
) -> IssuedKey {
    let mut random = [0u8; 32 + ID_LEN];
    OsRng
        .try_fill_bytes(&mut random)
        .expect("the operating system's random source failed");
    // 32 divides 256, so masking a byte to 5 bits picks each character uniformly.
    let key_id: String = random[32..]
        .iter()
        .map(|b| ID_ALPHABET[(b & 31) as usize] as char)
        .collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[..32]);
    let plaintext = format!("{KEY_PREFIX}{key_id}_{secret}");
    IssuedKey {
        record: NewApiKey {
            key_id,
            account_id,
            secret_hash: hash_key(&plaintext),
            label,
            scopes,
        },
        plaintext,
    }
}

/// SHA-256 of the whole key text.
pub fn hash_key(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

/// The public id inside a key, if the text has the shape of one.
pub fn key_id_of(plaintext: &str) -> Option<&str> {
    let rest = plaintext.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let shaped = id.len() == ID_LEN
        && id.bytes().all(|b| ID_ALPHABET.contains(&b))
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shaped.then_some(id)
}

/// Why a request was not let in.
#[derive(Debug)]
pub enum AuthFailure {
    /// No `Authorization` header, or not a Bearer/Token one.
    Missing,
    /// Not a key we know, a wrong secret, or a revoked key.
    Invalid,
    /// A valid key of an account an operator disabled.
    AccountDisabled,
    /// The store could not be asked.
    Store(StoreError),
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub account_id: AccountId,
    pub key_row: i64,
    /// What the caller's key may do.
    pub scopes: Scopes,
}

impl Caller {
    /// Whether the caller's key has `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }
}

/// Checks the `Authorization` header value against the store.
pub async fn authenticate(
    store: &SharedStore,
    header: Option<&str>,
) -> Result<Caller, AuthFailure> {
    let token = bearer_token(header)?;
    let key_id = key_id_of(token).ok_or(AuthFailure::Invalid)?;
    let record = store
        .find_key(key_id)
        .await
        .map_err(AuthFailure::Store)?
        .ok_or(AuthFailure::Invalid)?;
    let caller = verify(&record, token).ok_or(AuthFailure::Invalid)?;
    enabled(&record)?;
    Ok(caller)
}

/// A key that verified is still refused while its account is disabled (said
/// only to a caller that proved it holds the key).
fn enabled(record: &ApiKeyRecord) -> Result<(), AuthFailure> {
    if record.account_disabled {
        Err(AuthFailure::AccountDisabled)
    } else {
        Ok(())
    }
}

/// [`authenticate`] for a route whose every effect the store checks the
/// key's revocation for itself (the send route): a key that verified before
/// is checked against `cache` without asking the store.
pub async fn authenticate_cached(
    store: &SharedStore,
    cache: &KeyCache,
    header: Option<&str>,
) -> Result<Caller, AuthFailure> {
    let token = bearer_token(header)?;
    let key_id = key_id_of(token).ok_or(AuthFailure::Invalid)?;
    if let Some(caller) = cache.check(key_id, token) {
        return Ok(caller);
    }
    let record = store
        .find_key(key_id)
        .await
        .map_err(AuthFailure::Store)?
        .ok_or(AuthFailure::Invalid)?;
    let caller = verify(&record, token).ok_or(AuthFailure::Invalid)?;
    enabled(&record)?;
    cache.remember(key_id, &record, caller);
    Ok(caller)
}

/// The key text of a `Bearer` or `Token` header.
fn bearer_token(header: Option<&str>) -> Result<&str, AuthFailure> {
    let header = header.ok_or(AuthFailure::Missing)?.trim();
    let (scheme, token) = header.split_once(' ').ok_or(AuthFailure::Missing)?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")) {
        return Err(AuthFailure::Missing);
    }
    Ok(token.trim())
}

fn verify(record: &ApiKeyRecord, token: &str) -> Option<Caller> {
    let presented = hash_key(token);
    let matches: bool = presented.ct_eq(record.secret_hash.as_slice()).into();
    (matches && record.revoked_at.is_none()).then_some(Caller {
        account_id: record.account_id,
        key_row: record.id,
        scopes: record.scopes,
    })
}

/// Most keys a [`KeyCache`] holds; past it, it starts again empty.
const KEY_CACHE_MAX: usize = 10_000;

/// Keys that verified against the store (live then), by their public id, for
/// [`authenticate_cached`]. Only keys the store knows and whose secret matched
/// get in, so clients cannot fill it with ids of their choosing; it is bounded
/// all the same. A key the store refused as revoked is taken out
/// ([`KeyCache::forget`]); scopes never change after a key is made, so what
/// is cached cannot go stale otherwise.
#[derive(Default)]
pub struct KeyCache {
    // std RwLock: a lookup per send, never held across an await.
    keys: RwLock<HashMap<String, CachedKey>>,
}

struct CachedKey {
    secret_hash: [u8; 32],
    caller: Caller,
}

impl KeyCache {
    /// The caller, if `key_id` is cached and `token` hashes to its secret.
    fn check(&self, key_id: &str, token: &str) -> Option<Caller> {
        let keys = self.keys.read().expect("key cache poisoned");
        let cached = keys.get(key_id)?;
        let matches: bool = hash_key(token).ct_eq(&cached.secret_hash).into();
        matches.then_some(cached.caller)
    }

    fn remember(&self, key_id: &str, record: &ApiKeyRecord, caller: Caller) {
        let Ok(secret_hash) = <[u8; 32]>::try_from(record.secret_hash.as_slice()) else {
            return;
        };
        let mut keys = self.keys.write().expect("key cache poisoned");
        if keys.len() >= KEY_CACHE_MAX {
            keys.clear();
        }
        keys.insert(
            key_id.to_owned(),
            CachedKey {
                secret_hash,
                caller,
            },
        );
    }

    /// Drops the key with row id `key_row` (the store found it revoked), so
    /// its next request is refused by the key check itself.
    pub fn forget(&self, key_row: i64) {
        self.keys
            .write()
            .expect("key cache poisoned")
            .retain(|_, k| k.caller.key_row != key_row);
    }
}

/// Remembers when each key was last used until the next flush.
#[derive(Default)]
pub struct LastUsed {
    // std Mutex: a map insert per request, never held across an await.
    pending: Mutex<HashMap<i64, Micros>>,
}

impl LastUsed {
    pub fn record(&self, key_row: i64, at: Micros) {
        self.pending
            .lock()
            .expect("last-used map poisoned")
            .insert(key_row, at);
    }

    /// Writes what was gathered; on failure it is kept for the next flush.
    pub async fn flush(&self, store: &SharedStore) -> Result<(), StoreError> {
        let batch: Vec<(i64, Micros)> = {
            let mut map = self.pending.lock().expect("last-used map poisoned");
            map.drain().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = store.touch_keys(batch.clone()).await {
            let mut map = self.pending.lock().expect("last-used map poisoned");
            for (k, at) in batch {
                let v = map.entry(k).or_insert(at);
                *v = (*v).max(at);
            }
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_parse_back_and_hash_to_what_is_stored() {
        let k = issue_key(7, None);
        assert!(k.plaintext.starts_with("otpg_"));
        assert_eq!(key_id_of(&k.plaintext), Some(k.record.key_id.as_str()));
        assert_eq!(hash_key(&k.plaintext), k.record.secret_hash);
        assert_ne!(issue_key(7, None).plaintext, k.plaintext);
    }

    #[test]
    fn malformed_keys_have_no_id() {
        for bad in [
            "",
            "otpg_",
            "otpg_abc_def",
            "xxxx_abcdefghijkm_",
            "otpg_abcdefghijkm_short",
        ] {
            assert_eq!(key_id_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_revoked_or_wrong_key_does_not_verify() {
        let k = issue_key(1, None);
        let mut rec = ApiKeyRecord {
            id: 1,
            key_id: k.record.key_id.clone(),
            account_id: 1,
            secret_hash: k.record.secret_hash.to_vec(),
            label: None,
            created_at: 0,
            revoked_at: None,
            last_used: None,
            scopes: k.record.scopes,
            account_disabled: false,
        };
        assert_eq!(
            verify(&rec, &k.plaintext).map(|c| c.scopes),
            Some(Scopes::DEFAULT)
        );
        let mut wrong = k.plaintext.clone();
        wrong.pop();
        wrong.push(if k.plaintext.ends_with('A') { 'B' } else { 'A' });
        assert!(verify(&rec, &wrong).is_none());
        rec.revoked_at = Some(5);
        assert!(verify(&rec, &k.plaintext).is_none());
    }

    #[test]
    fn the_key_cache_answers_only_the_right_secret_and_forgets_a_revoked_key() {
        let k = issue_key(1, None);
        let record = ApiKeyRecord {
            id: 9,
            key_id: k.record.key_id.clone(),
            account_id: 1,
            secret_hash: k.record.secret_hash.to_vec(),
            label: None,
            created_at: 0,
            revoked_at: None,
            last_used: None,
            scopes: k.record.scopes,
            account_disabled: false,
        };
        let cache = KeyCache::default();
        let id = k.record.key_id.as_str();
        assert!(cache.check(id, &k.plaintext).is_none());
        let caller = verify(&record, &k.plaintext).unwrap();
        cache.remember(id, &record, caller);
        assert_eq!(cache.check(id, &k.plaintext), Some(caller));
        let mut wrong = k.plaintext.clone();
        wrong.pop();
        wrong.push(if k.plaintext.ends_with('A') { 'B' } else { 'A' });
        assert!(cache.check(id, &wrong).is_none());
        cache.forget(8);
        assert!(cache.check(id, &k.plaintext).is_some(), "another key");
        cache.forget(9);
        assert!(cache.check(id, &k.plaintext).is_none());
    }
}
