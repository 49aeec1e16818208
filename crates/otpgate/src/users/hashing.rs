//! Password hashing: Argon2id with OWASP's minimum parameters (19 MiB of
//! memory, 2 passes, 1 lane; a 16-byte random salt, a 32-byte output), kept as a
//! PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). A hash carries
//! its parameters, so raising them later still verifies older hashes.
//!
//! Hashing costs tens of milliseconds of CPU and 19 MiB, so it runs on the
//! blocking pool behind a semaphore (`auth.max_concurrent_hashes`): a flood of
//! logins queues instead of exhausting memory. A login for an unknown email is
//! checked against a dummy hash with the same parameters, so it takes as long
//! as a wrong password for a real user; the dummy is made when the hasher is,
//! so not even the first such login takes longer.

use std::sync::Arc;

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use rand::TryRngCore;
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

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

/// The hasher of one server: parameters, a concurrency limit and the dummy hash.
pub struct Passwords {
    permits: Arc<Semaphore>,
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

impl Passwords {
    /// `concurrency` hashes at once; 0: one per CPU. Computes the dummy hash
    /// on the calling thread.
    pub fn new(concurrency: usize) -> Passwords {
        let n = if concurrency == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            concurrency
        };
        let mut random = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut random)
            .expect("the operating system's random source failed");
        let unknown: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Passwords {
            permits: Arc::new(Semaphore::new(n)),
            dummy: hash_now(&unknown).expect("the fixed Argon2 parameters hash any password"),
        }
    }

    /// The hash to store for a new password.
    pub async fn hash(&self, password: &NewPassword) -> Result<String, HashError> {
        let password = password.expose().to_owned();
        self.run(move || hash_now(&password)).await?
    }

    /// Whether `password` matches `stored`; with no stored hash (an unknown
    /// email) it is checked against the dummy hash, which nothing matches, in
    /// the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashError> {
        let (hash, real) = match stored {
            Some(h) => (h.to_owned(), true),
            None => (self.dummy.clone(), false),
        };
        let password = password.to_owned();
        let matched = self.run(move || verify_now(&password, &hash)).await?;
        Ok(matched && real)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Unavailable)?;
        // The permit lives in the blocking task: a client that goes away
        // drops this future, but the hash runs on, and must keep its slot.
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|_| HashError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_argon2id_with_the_documented_parameters_and_verifies() {
        let passwords = Passwords::new(1);
        let pw = NewPassword::parse("correct horse battery".into()).unwrap();
        let hash = passwords.hash(&pw).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(
            passwords
                .verify("correct horse battery", Some(&hash))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("correct horse batterY", Some(&hash))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("anything", Some("not a hash"))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("anything", None).await.unwrap());
        let again = passwords.hash(&pw).await.unwrap();
        assert_ne!(hash, again, "each hash has its own salt");
    }
}
