//! Users, their passwords and tokens, and the admin token: everything that lets a
//! person (rather than an API key) call otpgate.
//!
//! - A user belongs to one account and logs in with email and password
//!   ([`Email`], [`NewPassword`]); passwords are kept as Argon2id hashes
//!   ([`hashing`]).
//! - A login returns an access token (1 day) and a refresh token (7 days):
//!   HS256 JWTs signed with `auth.token_secret` ([`tokens`]). Access tokens open
//!   the user endpoints (`user-detail`, `generate-api-keys`, `get-api-keys`);
//!   the OTP endpoints take API keys only, and neither kind opens the other.
//! - The admin API takes one configured token (`admin.token`), compared in
//!   constant time; unset, the admin API answers 404.
//!
//! [`UserAuth::load`] builds all of it from the configuration: in production
//! mode the server refuses to start without `auth.token_secret`; in development
//! mode a missing one is generated at each start, with a warning (tokens then
//! end with the process and are not shared between nodes).

pub mod hashing;
pub mod tokens;

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use otp_store::{LoginPolicy, now_micros};

use crate::config::{Config, Mode};
use hashing::Passwords;
use tokens::Tokens;

/// The longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// The shortest password a user may set.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted, in bytes; longer input is refused before
/// it reaches the hasher.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;
/// The fewest bytes a token secret must decode to.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

/// An email as users are looked up by: trimmed and in lower case, so
/// `Ana@Example.com` and `ana@example.com` are one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// A well-formed email (`local@domain`, at most 254 characters, no spaces
    /// or control characters), normalised.
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let email = Email::normalise(raw);
        let Some((local, domain)) = email.0.split_once('@') else {
            return Err("Enter a valid email address.");
        };
        let well_formed = !local.is_empty()
            && local.len() <= 64
            && !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && email.0.len() <= MAX_EMAIL_LEN
            && !email.0.chars().any(|c| c.is_whitespace() || c.is_control());
        if well_formed {
            Ok(email)
        } else {
            Err("Enter a valid email address.")
        }
    }

    /// What a login looks up: the same normalisation, without the checks (a
    /// malformed email simply matches no user).
    pub fn normalise(raw: &str) -> Email {
        Email(raw.trim().to_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password a user is setting: 8 characters or more, at most 1024 bytes. It
/// is taken as typed (no trimming); its `Debug` prints `[redacted]`.
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(raw: String) -> Result<NewPassword, String> {
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            return Err(format!(
                "The password must have at least {MIN_PASSWORD_CHARS} characters."
            ));
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(format!(
                "The password may have at most {MAX_PASSWORD_BYTES} bytes."
            ));
        }
        Ok(NewPassword(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Passwords, tokens, the login limit and the admin token of one server.
pub struct UserAuth {
    pub passwords: Passwords,
    pub tokens: Tokens,
    /// Login attempts per email per window.
    pub login_max_attempts: u32,
    pub login_window_seconds: u64,
    /// SHA-256 of the admin token; `None`: the admin API is off.
    admin_token: Option<[u8; 32]>,
}

impl UserAuth {
    /// Builds it from `[auth]` and `[admin]` (see the module docs).
    pub fn load(config: &Config) -> anyhow::Result<UserAuth> {
        let auth = &config.auth;
        if auth.access_token_seconds == 0 || auth.refresh_token_seconds == 0 {
            bail!("auth.access_token_seconds and auth.refresh_token_seconds must be positive");
        }
        if auth.login_max_attempts == 0 || auth.login_window_seconds == 0 {
            bail!("auth.login_max_attempts and auth.login_window_seconds must be positive");
        }
        let secret = match &auth.token_secret {
            Some(s) => {
                let bytes = BASE64
                    .decode(s.expose().trim())
                    .map_err(|_| anyhow::anyhow!("auth.token_secret is not valid base64"))?;
                if bytes.len() < MIN_TOKEN_SECRET_BYTES {
                    bail!(
                        "auth.token_secret must decode to at least {MIN_TOKEN_SECRET_BYTES} bytes, got {}",
                        bytes.len()
                    );
                }
                bytes
            }
            None if config.mode == Mode::Production => bail!(
                "mode is \"production\" but auth.token_secret is not set: login tokens cannot be \
                 signed. Set it to 32 random bytes in base64 (openssl rand -base64 32), e.g. \
                 OTPGATE_AUTH__TOKEN_SECRET"
            ),
            None => {
                tracing::warn!(
                    "development mode: auth.token_secret is not set; login tokens are signed \
                     with a key made for this process, so they end when it stops"
                );
                let mut key = vec![0u8; 32];
                OsRng
                    .try_fill_bytes(&mut key)
                    .expect("the operating system's random source failed");
                key
            }
        };
        let admin_token = match &config.admin.token {
            None => None,
            Some(t) if t.expose().trim().chars().count() < MIN_ADMIN_TOKEN_CHARS => bail!(
                "admin.token must have at least {MIN_ADMIN_TOKEN_CHARS} characters \
                 (openssl rand -base64 32)"
            ),
            Some(t) => Some(Sha256::digest(t.expose().trim().as_bytes()).into()),
        };
        Ok(UserAuth {
            passwords: Passwords::new(auth.max_concurrent_hashes),
            tokens: Tokens::new(
                secret,
                auth.access_token_seconds,
                auth.refresh_token_seconds,
            ),
            login_max_attempts: auth.login_max_attempts,
            login_window_seconds: auth.login_window_seconds,
            admin_token,
        })
    }

    /// The login limit as the store applies it, for an attempt now.
    pub fn login_policy(&self) -> LoginPolicy {
        LoginPolicy {
            max_attempts: self.login_max_attempts,
            window: i64::try_from(self.login_window_seconds.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
            now: now_micros(),
        }
    }

    /// Whether the admin API is on.
    pub fn admin_enabled(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Whether `presented` is the admin token. Both sides are hashed first, so
    /// the constant-time comparison does not even leak the token's length.
    pub fn is_admin_token(&self, presented: &str) -> bool {
        let Some(expected) = &self.admin_token else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(expected).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ana.Rai@Example.COM ").unwrap().as_str(),
            "ana.rai@example.com"
        );
        for bad in [
            "",
            "ana",
            "@example.com",
            "ana@",
            "ana@@example.com",
            "a na@example.com",
            "ana@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn new_passwords_have_bounds_and_hide_in_debug() {
        assert!(NewPassword::parse("short".into()).is_err());
        assert!(NewPassword::parse("x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        let p = NewPassword::parse("correct horse".into()).unwrap();
        assert_eq!(format!("{p:?}"), "[redacted]");
    }

    #[test]
    fn production_needs_a_token_secret_and_development_makes_one() {
        let mut config = Config {
            mode: Mode::Production,
            ..Config::default()
        };
        let error = UserAuth::load(&config).err().unwrap().to_string();
        assert!(error.contains("auth.token_secret"), "{error}");
        config.auth.token_secret = Some(Secret::new(BASE64.encode([7u8; 16])));
        assert!(UserAuth::load(&config).is_err(), "16 bytes are too few");
        config.auth.token_secret = Some(Secret::new(BASE64.encode([7u8; 32])));
        assert!(UserAuth::load(&config).is_ok());
        config.mode = Mode::Development;
        config.auth.token_secret = None;
        assert!(UserAuth::load(&config).is_ok());
    }

    #[test]
    fn the_admin_token_is_long_and_matched_exactly() {
        let mut config = Config::default();
        assert!(!UserAuth::load(&config).unwrap().admin_enabled());
        config.admin.token = Some(Secret::new("too-short".into()));
        assert!(UserAuth::load(&config).is_err());
        let token = "a".repeat(40);
        config.admin.token = Some(Secret::new(token.clone()));
        let auth = UserAuth::load(&config).unwrap();
        assert!(auth.is_admin_token(&token));
        assert!(!auth.is_admin_token(&token[1..]));
        assert!(!auth.is_admin_token(&format!("{token}a")));
        assert!(!auth.is_admin_token(""));
    }
}
