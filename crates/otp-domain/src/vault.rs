//! Codes at rest: what is kept of a code so that it can be checked, and shown
//! again for a while, without a database dump revealing it.
//!
//! Each OTP gets a random 16-byte `salt` when it is accepted. From the code and
//! the values that identify the OTP before it has a row id (its account, its
//! destination and that salt) the [`CodeVault`] makes:
//!
//! - a **hash**, HMAC-SHA256 under a server secret, used to verify. Without the
//!   secret a stolen hash cannot be brute-forced, and since the salt is part of
//!   the input, a hash copied onto another OTP's row (or another account's, or
//!   another number's) does not match there.
//! - a **cipher**, AES-256-GCM under the current encryption key with a random
//!   96-bit nonce and the same identifying values as associated data, so that
//!   the TingTing-compatible list can show the code until it is purged. The id of
//!   the key is stored beside it; older keys stay configured for reading only.
//!
//! Random nonces are safe for about 2^32 encryptions per key; rotate the
//! encryption key (a new `current_key_id`) long before that.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// What replaces a code that is hidden or no longer kept.
pub const MASK: &str = "******";

/// Bytes of the per-OTP salt.
pub const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const HASH_CONTEXT: &[u8] = b"otpgate/code-hash/v1\0";
const CIPHER_CONTEXT: &[u8] = b"otpgate/code-cipher/v1\0";

/// The values that tie a stored code to its OTP, all known before the insert.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub account_id: i64,
    /// The destination in E.164.
    pub e164: &'a str,
    pub salt: &'a [u8],
}

impl Binding<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.account_id.to_be_bytes());
        // Length-prefixed, so no two bindings serialize alike.
        out.extend_from_slice(&(self.e164.len() as u32).to_be_bytes());
        out.extend_from_slice(self.e164.as_bytes());
        out.extend_from_slice(&(self.salt.len() as u32).to_be_bytes());
        out.extend_from_slice(self.salt);
    }
}

/// A code as kept at rest.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCode {
    pub salt: [u8; SALT_LEN],
    /// HMAC-SHA256 of the bound code.
    pub hash: [u8; 32],
    /// Nonce, ciphertext and tag.
    pub cipher: Vec<u8>,
    /// The encryption key that made `cipher`.
    pub key_id: String,
}

impl fmt::Debug for SealedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedCode")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why a set of keys was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The current key id names no configured encryption key.
    #[error("the current encryption key {0:?} is not among the configured keys")]
    UnknownCurrentKey(String),
    /// A key id is empty or too long to store.
    #[error("encryption key ids must be 1 to 64 characters")]
    BadKeyId,
}

/// The server's secrets for codes: one HMAC key, and encryption keys by id.
/// `Debug` shows only the key ids.
#[derive(Clone)]
pub struct CodeVault {
    hmac_key: [u8; 32],
    current: String,
    ciphers: HashMap<String, Aes256Gcm>,
}

impl fmt::Debug for CodeVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<_> = self.ciphers.keys().collect();
        ids.sort();
        f.debug_struct("CodeVault")
            .field("current_key_id", &self.current)
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

impl CodeVault {
    /// Builds a vault; `current_key_id` must be one of `encryption_keys`.
    pub fn new(
        hmac_key: [u8; 32],
        current_key_id: &str,
        encryption_keys: impl IntoIterator<Item = (String, [u8; 32])>,
    ) -> Result<CodeVault, KeyError> {
        let mut ciphers = HashMap::new();
        for (id, key) in encryption_keys {
            if id.is_empty() || id.len() > 64 {
                return Err(KeyError::BadKeyId);
            }
            ciphers.insert(id, Aes256Gcm::new(&key.into()));
        }
        if !ciphers.contains_key(current_key_id) {
            return Err(KeyError::UnknownCurrentKey(current_key_id.to_owned()));
        }
        Ok(CodeVault {
            hmac_key,
            current: current_key_id.to_owned(),
            ciphers,
        })
    }

    /// A vault with fresh random keys, for tests and for tools that never read
    /// a code back after a restart. Codes it seals are unreadable to any other.
    pub fn ephemeral() -> CodeVault {
        CodeVault::new(
            random_key(),
            "ephemeral",
            [("ephemeral".into(), random_key())],
        )
        .expect("the current key is listed")
    }

    /// The id of the key new codes are encrypted with.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Hashes and encrypts `code` for an OTP of `account_id` to `e164`, with a
    /// fresh salt.
    pub fn seal(&self, account_id: i64, e164: &str, code: &str) -> SealedCode {
        // Salt and nonce come from one read of the OS source: a send makes
        // one `getrandom` call here, not two (each showed in a profile).
        let mut random = [0u8; SALT_LEN + NONCE_LEN];
        fill_random(&mut random);
        let (salt_bytes, nonce_bytes) = random.split_at(SALT_LEN);
        let salt: [u8; SALT_LEN] = salt_bytes.try_into().expect("SALT_LEN bytes");
        let nonce: [u8; NONCE_LEN] = nonce_bytes.try_into().expect("NONCE_LEN bytes");
        let binding = Binding {
            account_id,
            e164,
            salt: &salt,
        };
        let hash = self.hash(&binding, code);
        let aad = self.aad(&binding, &self.current);
        let sealed = self.ciphers[&self.current]
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: code.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a short code cannot fail");
        let mut cipher = Vec::with_capacity(NONCE_LEN + sealed.len());
        cipher.extend_from_slice(&nonce);
        cipher.extend_from_slice(&sealed);
        SealedCode {
            salt,
            hash,
            cipher,
            key_id: self.current.clone(),
        }
    }

    /// Decrypts a stored code; `None` when its key is not configured or the
    /// cipher does not authenticate for this OTP (altered, or moved from another row).
    pub fn open(&self, binding: &Binding<'_>, cipher: &[u8], key_id: &str) -> Option<String> {
        let aes = self.ciphers.get(key_id)?;
        if cipher.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = cipher.split_at(NONCE_LEN);
        let aad = self.aad(binding, key_id);
        let plain = aes
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }

    /// Whether `candidate` is the code whose hash is `stored`. The HMAC is
    /// recomputed and compared in constant time.
    pub fn matches(&self, binding: &Binding<'_>, candidate: &str, stored: &[u8]) -> bool {
        let computed = self.hash(binding, candidate);
        computed.as_slice().ct_eq(stored).into()
    }

    fn hash(&self, binding: &Binding<'_>, code: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.hmac_key).expect("HMAC takes any key");
        let mut input = Vec::with_capacity(64 + code.len());
        input.extend_from_slice(HASH_CONTEXT);
        binding.write(&mut input);
        input.extend_from_slice(code.as_bytes());
        mac.update(&input);
        mac.finalize().into_bytes().into()
    }

    fn aad(&self, binding: &Binding<'_>, key_id: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + key_id.len());
        aad.extend_from_slice(CIPHER_CONTEXT);
        aad.extend_from_slice(&(key_id.len() as u32).to_be_bytes());
        aad.extend_from_slice(key_id.as_bytes());
        binding.write(&mut aad);
        aad
    }
}

/// 32 bytes from the OS CSPRNG, for a new key.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    fill_random(&mut key);
    key
}

fn fill_random(buf: &mut [u8]) {
    // A salt or nonce that is not random would be worse than no answer.
    OsRng
        .try_fill_bytes(buf)
        .expect("the OS random source failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> CodeVault {
        CodeVault::new(
            [7; 32],
            "k2",
            [("k1".into(), [1; 32]), ("k2".into(), [2; 32])],
        )
        .unwrap()
    }

    fn binding(s: &SealedCode) -> Binding<'_> {
        Binding {
            account_id: 1,
            e164: "+9779851023212",
            salt: &s.salt,
        }
    }

    #[test]
    fn a_sealed_code_opens_and_matches_only_for_its_own_otp() {
        let v = vault();
        let s = v.seal(1, "+9779851023212", "482193");
        assert_eq!(s.key_id, "k2");
        assert_eq!(
            v.open(&binding(&s), &s.cipher, &s.key_id).as_deref(),
            Some("482193")
        );
        assert!(v.matches(&binding(&s), "482193", &s.hash));
        assert!(!v.matches(&binding(&s), "482194", &s.hash));
        assert!(!v.matches(&binding(&s), "48219", &s.hash));

        let other_account = Binding {
            account_id: 2,
            ..binding(&s)
        };
        let other_number = Binding {
            e164: "+9779851023213",
            ..binding(&s)
        };
        let other_salt = [0u8; SALT_LEN];
        let other_row = Binding {
            salt: &other_salt,
            ..binding(&s)
        };
        for b in [other_account, other_number, other_row] {
            assert!(!v.matches(&b, "482193", &s.hash));
            assert_eq!(v.open(&b, &s.cipher, &s.key_id), None);
        }
    }

    #[test]
    fn nothing_stored_contains_the_code() {
        let v = vault();
        let a = v.seal(1, "+9779851023212", "482193");
        let b = v.seal(1, "+9779851023212", "482193");
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash, "the same code hashes differently per OTP");
        assert_ne!(a.cipher, b.cipher);
        assert_ne!(
            a.salt[..NONCE_LEN],
            a.cipher[..NONCE_LEN],
            "the nonce (the cipher's head) is not the salt again"
        );
        for bytes in [&a.hash[..], &a.cipher[..], &a.salt[..]] {
            assert!(!bytes.windows(6).any(|w| w == b"482193"));
        }
        assert!(!format!("{a:?}{v:?}").contains("482193"));
    }

    #[test]
    fn old_keys_still_open_and_unknown_keys_do_not() {
        let old = CodeVault::new([7; 32], "k1", [("k1".into(), [1; 32])]).unwrap();
        let s = old.seal(1, "+9779851023212", "1234");
        let rotated = vault();
        assert_eq!(
            rotated.open(&binding(&s), &s.cipher, "k1").as_deref(),
            Some("1234")
        );
        assert!(rotated.matches(&binding(&s), "1234", &s.hash));
        assert_eq!(rotated.open(&binding(&s), &s.cipher, "k9"), None);
        let mut tampered = s.cipher.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(rotated.open(&binding(&s), &tampered, "k1"), None);
        assert_eq!(rotated.open(&binding(&s), &s.cipher[..5], "k1"), None);
    }

    #[test]
    fn the_current_key_must_be_configured() {
        assert_eq!(
            CodeVault::new([0; 32], "k3", [("k1".into(), [1; 32])]).unwrap_err(),
            KeyError::UnknownCurrentKey("k3".into())
        );
        assert_eq!(
            CodeVault::new([0; 32], "", [(String::new(), [1; 32])]).unwrap_err(),
            KeyError::BadKeyId
        );
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let shown = format!("{:?}", vault());
        assert!(shown.contains("k1") && shown.contains("k2"), "{shown}");
        assert!(!shown.contains("[7, 7"), "{shown}");
    }
}
