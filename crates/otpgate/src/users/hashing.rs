//! Password hashing: Argon2id with OWASP's minimum parameters (19 MiB of
//! memory, 2 passes, 1 lane; a 16-byte random salt, a 32-byte output), kept as a
//! PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). A hash carries
//! its parameters, so raising them later still verifies older hashes.
//!
//! Hashing costs tens of milliseconds of CPU and 19 MiB, so it runs on the
//! blocking pool behind a semaphore (`auth.max_concurrent_hashes`): a flood of
//! logins queues instead of exhausting memory. The queue is bounded too: a
//! login first takes one of `auth.max_pending_hashes` places ([`Passwords::admit`]),
//! without waiting, and holds it until its check is done; when none is free
//! the login is shed at once (429 `login_busy`) instead of waiting behind a
//! queue that only grows. A login for an unknown email is
//! checked against a dummy hash with the same parameters, so it takes as long
//! as a wrong password for a real user; the dummy is made when the hasher is,
//! so not even the first such login takes longer.

use std::sync::Arc;

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use rand::TryRngCore;
use rand::rngs::OsRng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::NewPassword;

/// Memory, in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The hashing task could not run (the runtime is shutting down).
    #[error("the password hasher is unavailable")]
    Unavailable,
    /// Argon2 refused (never expected with the fixed parameters).
    #[error("password hashing failed: {0}")]
    Argon2(String),
}

/// The hasher of one server: parameters, a concurrency limit, the bound on
/// logins running or waiting, and the dummy hash.
pub struct Passwords {
    permits: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    /// A hash of a random password no one knows.
    dummy: String,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, Some(32))
        .expect("the fixed Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes on the current thread (the CLI's one-shot commands use it directly).
pub fn hash_now(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut salt)
        .expect("the operating system's random source failed");
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

/// Checks on the current thread; a malformed stored hash never matches.
fn verify_now(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        // The output comparison inside is constant-time.
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A login's place among those whose password check is running or waiting;
/// given back when the check is done (not when the client goes away).
pub struct Admission {
    _place: OwnedSemaphorePermit,
}

impl Passwords {
    /// `concurrency` hashes at once (0: one per CPU), and at most `pending`
    /// logins running or waiting (0: eight per hash that may run at once).
    /// Computes the dummy hash on the calling thread.
    pub fn new(concurrency: usize, pending: usize) -> Passwords {
        let n = if concurrency == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            concurrency
        };
        let pending = if pending == 0 {
            n.saturating_mul(8)
        } else {
            pending
        };
        let mut random = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut random)
            .expect("the operating system's random source failed");
        let unknown: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Passwords {
            permits: Arc::new(Semaphore::new(n)),
            pending: Arc::new(Semaphore::new(pending)),
            dummy: hash_now(&unknown).expect("the fixed Argon2 parameters hash any password"),
        }
    }

    /// The hash to store for a new password (the admin API's; it waits for a
    /// hashing slot without taking a login's place).
    pub async fn hash(&self, password: &NewPassword) -> Result<String, HashError> {
        let password = password.expose().to_owned();
        self.run(None, move || hash_now(&password)).await?
    }

    /// A place for one login's password check, if one is free now; `None`:
    /// as many checks as allowed are running or waiting, shed this login.
    pub fn admit(&self) -> Option<Admission> {
        self.pending
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|place| Admission { _place: place })
    }

    /// Whether `password` matches `stored`; with no stored hash (an unknown
    /// email) it is checked against the dummy hash, which nothing matches, in
    /// the same time. The admission is given back when the check is done.
    pub async fn verify(
        &self,
        admission: Admission,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let (hash, real) = match stored {
            Some(h) => (h.to_owned(), true),
            None => (self.dummy.clone(), false),
        };
        let password = password.to_owned();
        let matched = self
            .run(Some(admission), move || verify_now(&password, &hash))
            .await?;
        Ok(matched && real)
    }

    async fn run<T: Send + 'static>(
        &self,
        admission: Option<Admission>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Unavailable)?;
        // The permits live in the blocking task: a client that goes away
        // drops this future, but the hash runs on, and must keep its slot and
        // its place.
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            drop(admission);
            result
        })
        .await
        .map_err(|_| HashError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::PasswordRules;

    #[tokio::test]
    async fn a_hash_is_argon2id_with_the_documented_parameters_and_verifies() {
        let passwords = Passwords::new(1, 0);
        let pw =
            NewPassword::parse("correct horse battery".into(), PasswordRules::PRODUCTION).unwrap();
        let hash = passwords.hash(&pw).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(
            passwords
                .verify(
                    passwords.admit().unwrap(),
                    "correct horse battery",
                    Some(&hash)
                )
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify(
                    passwords.admit().unwrap(),
                    "correct horse batterY",
                    Some(&hash)
                )
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify(passwords.admit().unwrap(), "anything", Some("not a hash"))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify(passwords.admit().unwrap(), "anything", None)
                .await
                .unwrap()
        );
        let again = passwords.hash(&pw).await.unwrap();
        assert_ne!(hash, again, "each hash has its own salt");
    }

    #[tokio::test]
    async fn admissions_are_bounded_and_given_back_when_the_check_is_done() {
        let passwords = Passwords::new(1, 2);
        let first = passwords.admit().expect("a first place");
        let second = passwords.admit().expect("a second place");
        assert!(passwords.admit().is_none(), "two places only");
        drop(first);
        let third = passwords.admit().expect("a place given back");
        assert!(!passwords.verify(third, "anything", None).await.unwrap());
        assert!(passwords.admit().is_some(), "the check gave its place back");
        drop(second);
    }
}
