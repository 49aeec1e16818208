//! Users, their passwords and tokens, and the admin token: everything that lets a
//! person (rather than an API key) call otpgate.
//!
//! - A user belongs to one account and logs in with email and password
//!   ([`Email`], [`NewPassword`]); passwords are kept as Argon2id hashes
//!   ([`hashing`]). A new password must pass [`PasswordRules`]: 10 characters
//!   in production mode (8 in development), and not one of the common
//!   passwords of `data/common-passwords.txt` (NIST SP 800-63B). Passwords set
//!   before keep working: the rules apply when a password is set.
//! - Logins are limited per email, per client address and over the whole
//!   gateway (counted in the store), and the password checks waiting on a
//!   node are bounded ([`hashing::Passwords::admit`]).
//! - A login returns an access token (1 day) and a refresh token (7 days):
//!   HS256 JWTs signed with `auth.token_secret` ([`tokens`]), both bound to a
//!   session row that logout and password resets revoke. Access tokens open
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

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::LazyLock;

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
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
/// The shortest password a user may set in development mode.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The shortest password a user may set in production mode.
pub const MIN_PRODUCTION_PASSWORD_CHARS: usize = 10;
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

/// What a new password must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordRules {
    /// The fewest characters (Unicode scalar values).
    pub min_chars: usize,
}

impl PasswordRules {
    pub const PRODUCTION: PasswordRules = PasswordRules {
        min_chars: MIN_PRODUCTION_PASSWORD_CHARS,
    };
    pub const DEVELOPMENT: PasswordRules = PasswordRules {
        min_chars: MIN_PASSWORD_CHARS,
    };

    /// 10 characters in production mode, 8 in development mode.
    pub fn for_mode(mode: Mode) -> PasswordRules {
        match mode {
            Mode::Production => PasswordRules::PRODUCTION,
            Mode::Development => PasswordRules::DEVELOPMENT,
        }
    }
}

/// Why a new password was refused; [`PasswordRefused::code`] is the API's
/// error code on the `password` field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRefused {
    #[error("The password must have at least {min} characters.")]
    TooShort { min: usize },
    #[error("The password may have at most {MAX_PASSWORD_BYTES} bytes.")]
    TooLong,
    #[error(
        "This password is too common: it is on the list of the most used passwords, or one \
         character repeated, or a run of consecutive letters or digits. Choose another."
    )]
    TooCommon,
}

impl PasswordRefused {
    pub fn code(&self) -> &'static str {
        match self {
            PasswordRefused::TooShort { .. } => "password_too_short",
            PasswordRefused::TooLong => "password_too_long",
            PasswordRefused::TooCommon => "password_too_common",
        }
    }
}

/// The common passwords (lower case, 8 characters or more), one a line.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

/// Whether a password is too common to allow: on the list (in any case), one
/// character repeated, or a run of consecutive characters up or down
/// (`abcdefghij`, `9876543210`).
pub fn is_common_password(password: &str) -> bool {
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS.contains(lower.as_str()) {
        return true;
    }
    let chars: Vec<u32> = lower.chars().map(u32::from).collect();
    let steps: HashSet<i64> = chars
        .windows(2)
        .map(|w| i64::from(w[1]) - i64::from(w[0]))
        .collect();
    steps.len() == 1 && steps.iter().all(|d| d.abs() <= 1)
}

/// A password a user is setting: at least [`PasswordRules::min_chars`]
/// characters, at most 1024 bytes, and not a common one. It is taken as typed
/// (no trimming); its `Debug` prints `[redacted]`.
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(raw: String, rules: PasswordRules) -> Result<NewPassword, PasswordRefused> {
        if raw.chars().count() < rules.min_chars {
            return Err(PasswordRefused::TooShort {
                min: rules.min_chars,
            });
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordRefused::TooLong);
        }
        if is_common_password(&raw) {
            return Err(PasswordRefused::TooCommon);
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

/// What per-address login limits count a client address as: an IPv4 address
/// as it is (an IPv4-mapped IPv6 address as its IPv4 one), an IPv6 address
/// by its /64 prefix (one subscriber's network: each of its 2^64 addresses is
/// no new client).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

/// Passwords, tokens, the login limits and the admin token of one server.
pub struct UserAuth {
    pub passwords: Passwords,
    pub tokens: Tokens,
    /// What new passwords must be (by `mode`).
    pub password_rules: PasswordRules,
    /// Login attempts per email per window.
    pub login_max_attempts: u32,
    /// Login attempts per client address per window; 0: no limit.
    pub login_max_attempts_per_address: u32,
    /// Login attempts of the whole gateway per window; 0: no limit.
    pub login_max_attempts_global: u32,
    pub login_window_seconds: u64,
    /// Active sessions per user; a login beyond revokes the oldest. 0: no limit.
    pub max_sessions_per_user: u32,
    /// The key emails are hashed with for logs (the token secret).
    log_key: Vec<u8>,
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
            passwords: Passwords::new(auth.max_concurrent_hashes, auth.max_pending_hashes),
            log_key: secret.clone(),
            tokens: Tokens::new(
                secret,
                auth.access_token_seconds,
                auth.refresh_token_seconds,
            ),
            password_rules: PasswordRules::for_mode(config.mode),
            login_max_attempts: auth.login_max_attempts,
            login_max_attempts_per_address: auth.login_max_attempts_per_address,
            login_max_attempts_global: auth.login_max_attempts_global,
            login_window_seconds: auth.login_window_seconds,
            max_sessions_per_user: auth.max_sessions_per_user,
            admin_token,
        })
    }

    /// The login limit as the store applies it, for an attempt now.
    pub fn login_policy(&self) -> LoginPolicy {
        LoginPolicy {
            max_attempts: self.login_max_attempts,
            max_per_address: self.login_max_attempts_per_address,
            max_global: self.login_max_attempts_global,
            window: i64::try_from(self.login_window_seconds.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
            now: now_micros(),
        }
    }

    /// How logs name the email of a login: 16 hex digits of an HMAC-SHA256
    /// of the normalised email under the token secret. The same email gets
    /// the same id (so failed logins can be followed), but the log does not
    /// show it, nor a password mistakenly typed into the email field;
    /// `otpgate users log-id EMAIL` computes the id of an email.
    pub fn email_log_id(&self, email: &Email) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.log_key).expect("HMAC takes any key");
        mac.update(b"otpgate login log id\0");
        mac.update(email.as_str().as_bytes());
        mac.finalize().into_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
        let dev = PasswordRules::DEVELOPMENT;
        assert_eq!(
            NewPassword::parse("short".into(), dev).err(),
            Some(PasswordRefused::TooShort { min: 8 })
        );
        assert_eq!(
            NewPassword::parse("x".repeat(MAX_PASSWORD_BYTES + 1), dev).err(),
            Some(PasswordRefused::TooLong)
        );
        let p = NewPassword::parse("correct horse".into(), dev).unwrap();
        assert_eq!(format!("{p:?}"), "[redacted]");
    }

    #[test]
    fn production_wants_ten_characters_and_development_eight() {
        assert_eq!(
            PasswordRules::for_mode(Mode::Production),
            PasswordRules::PRODUCTION
        );
        let nine = "tulip-owl";
        assert!(NewPassword::parse(nine.into(), PasswordRules::DEVELOPMENT).is_ok());
        let refused = NewPassword::parse(nine.into(), PasswordRules::PRODUCTION)
            .err()
            .unwrap();
        assert_eq!(refused, PasswordRefused::TooShort { min: 10 });
        assert_eq!(refused.code(), "password_too_short");
        // Characters, not bytes: 11 Devanagari characters (33 bytes) pass, 9 do not.
        let ten = "नमस्ते साथी";
        assert_eq!(ten.chars().count(), 11);
        assert!(NewPassword::parse(ten.into(), PasswordRules::PRODUCTION).is_ok());
        let nine: String = ten.chars().take(9).collect();
        assert!(NewPassword::parse(nine, PasswordRules::PRODUCTION).is_err());
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        assert!(
            COMMON_PASSWORDS.len() >= 9_000,
            "{}",
            COMMON_PASSWORDS.len()
        );
        for common in [
            "12345678",
            "password",
            "Password1",
            "PASSWORD123",
            "iloveyou",
            "qwertyuiop",
            "1q2w3e4r5t",
            "kathmandu123",
            "Sunshine2024",
            "aaaaaaaaaa",
            "ZZZZZZZZZZZZ",
            "abcdefghijk",
            "9876543210",
            "rstuvwxyz",
        ] {
            let refused = NewPassword::parse(common.into(), PasswordRules::DEVELOPMENT)
                .err()
                .unwrap_or_else(|| panic!("{common} was accepted"));
            assert_eq!(refused.code(), "password_too_common", "{common}");
        }
        for fine in [
            "correct horse battery",
            "abcdefghik",
            "1234567809",
            "aaaaaaaaab",
        ] {
            assert!(!is_common_password(fine), "{fine}");
        }
    }

    #[test]
    fn addresses_are_counted_as_ipv4_or_ipv6_slash_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff::1"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn an_emails_log_id_is_stable_and_reveals_nothing() {
        let auth = UserAuth::load(&Config::default()).unwrap();
        let ana = Email::normalise("Ana@Example.com");
        let id = auth.email_log_id(&ana);
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, auth.email_log_id(&Email::normalise("ana@example.com ")));
        assert_ne!(id, auth.email_log_id(&Email::normalise("bo@example.com")));
        let other = UserAuth::load(&Config::default()).unwrap();
        assert_ne!(id, other.email_log_id(&ana), "keyed by the token secret");
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
