//! Codes at rest: the keys they are kept under, and the purge of old ones.
//!
//! The store keeps a code only as an HMAC-SHA256 hash (to verify it) and an
//! AES-256-GCM cipher (so the list can show it), see [`otp_domain::vault`].
//! [`load_vault`] builds the [`CodeVault`] from `[secrets]`:
//!
//! - `mode = "production"`: `secrets.hmac_key`, `secrets.encryption_keys` and
//!   `secrets.current_key_id` must all be set, or the server refuses to start.
//! - `mode = "development"` (the default, so that one command starts a laptop
//!   server): whatever is missing is generated once and kept in `secrets.file`
//!   (default: next to the SQLite database), with a warning in the log. Anyone who
//!   can read that file can read the codes in the database, which is fine for a
//!   laptop and wrong for anything else.
//!
//! `crate::retention` drops the ciphers of codes that expired more than
//! `retention.code_seconds` ago; the list then shows them masked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use figment::providers::{Format, Toml};
use serde::Deserialize;

use otp_domain::vault::{CodeVault, random_key};

use crate::config::{Config, Mode, Secret};

/// The range `expiry_seconds` may take on a send.
pub const EXPIRY_RANGE: (i64, i64) = (60, 3600);

/// The keys file of development mode: the same fields as `[secrets]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    hmac_key: Secret<String>,
    current_key_id: String,
    encryption_keys: BTreeMap<String, Secret<String>>,
}

/// Builds the vault from the configuration (see the module docs), after checking
/// the `[verify]` settings it goes with.
pub fn load_vault(config: &Config) -> anyhow::Result<CodeVault> {
    check_verify_settings(config)?;
    let s = &config.secrets;
    let complete =
        s.hmac_key.is_some() && !s.encryption_keys.is_empty() && !s.current_key_id.is_empty();
    if complete {
        let hmac = s.hmac_key.as_ref().expect("checked above");
        return build(hmac, &s.current_key_id, &s.encryption_keys);
    }
    if config.mode == Mode::Production {
        let mut missing = Vec::new();
        if s.hmac_key.is_none() {
            missing.push("secrets.hmac_key");
        }
        if s.encryption_keys.is_empty() {
            missing.push("secrets.encryption_keys");
        }
        if s.current_key_id.is_empty() {
            missing.push("secrets.current_key_id");
        }
        bail!(
            "mode is \"production\" but {} {} not set: codes cannot be kept safely. \
             Set each key to 32 random bytes in base64 (openssl rand -base64 32), e.g. \
             OTPGATE_SECRETS__HMAC_KEY, OTPGATE_SECRETS__ENCRYPTION_KEYS__K1 and \
             OTPGATE_SECRETS__CURRENT_KEY_ID=k1",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" }
        );
    }
    let path = keys_file(config);
    let file = read_or_create(&path)?;
    tracing::warn!(
        file = %path.display(),
        "development mode: code keys are kept in a local file; \
         set [secrets] and mode = \"production\" for real use"
    );
    // Configured values win over the file's.
    let hmac = s.hmac_key.as_ref().unwrap_or(&file.hmac_key);
    let current = if s.current_key_id.is_empty() {
        &file.current_key_id
    } else {
        &s.current_key_id
    };
    let mut keys = file.encryption_keys.clone();
    keys.extend(s.encryption_keys.clone());
    build(hmac, current, &keys)
}

pub(crate) fn check_verify_settings(config: &Config) -> anyhow::Result<()> {
    let v = &config.verify;
    if v.max_attempts < 1 {
        bail!("verify.max_attempts must be at least 1");
    }
    if !(EXPIRY_RANGE.0..=EXPIRY_RANGE.1).contains(&v.default_expiry_seconds) {
        bail!(
            "verify.default_expiry_seconds must be between {} and {}",
            EXPIRY_RANGE.0,
            EXPIRY_RANGE.1
        );
    }
    Ok(())
}

fn build(
    hmac: &Secret<String>,
    current: &str,
    keys: &BTreeMap<String, Secret<String>>,
) -> anyhow::Result<CodeVault> {
    let hmac = decode_key(hmac).context("secrets.hmac_key")?;
    let mut decoded = Vec::with_capacity(keys.len());
    for (id, key) in keys {
        let key = decode_key(key).with_context(|| format!("secrets.encryption_keys.{id}"))?;
        decoded.push((id.clone(), key));
    }
    CodeVault::new(hmac, current, decoded).context("secrets.current_key_id")
}

/// A key: 32 bytes in standard base64. The error never shows the value.
fn decode_key(key: &Secret<String>) -> anyhow::Result<[u8; 32]> {
    let bytes = BASE64
        .decode(key.expose().trim())
        .map_err(|_| anyhow::anyhow!("is not valid base64"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("must be 32 bytes, got {}", bytes.len()))
}

/// Where development mode keeps its keys.
pub fn keys_file(config: &Config) -> PathBuf {
    if !config.secrets.file.is_empty() {
        return PathBuf::from(&config.secrets.file);
    }
    let url = config.database_url.expose();
    match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Some(db) => PathBuf::from(format!("{db}.secrets.toml")),
        None => PathBuf::from("otpgate-secrets.toml"),
    }
}

/// Reads the keys file, or writes a new one. The file appears whole or not at
/// all (written aside, then linked into place), so servers starting together
/// end up with the same keys.
fn read_or_create(path: &Path) -> anyhow::Result<KeysFile> {
    if !path.exists() {
        let text = format!(
            "# Code keys generated by otpgate in development mode. Whoever reads this\n\
             # file can read the codes in the database: keep it private, and use\n\
             # mode = \"production\" with configured [secrets] for real use.\n\
             hmac_key = \"{}\"\n\
             current_key_id = \"dev1\"\n\n\
             [encryption_keys]\n\
             dev1 = \"{}\"\n",
            BASE64.encode(random_key()),
            BASE64.encode(random_key()),
        );
        let aside = path.with_extension(format!("tmp{}", std::process::id()));
        write_private(&aside, &text)
            .with_context(|| format!("writing the keys file {}", aside.display()))?;
        let linked = std::fs::hard_link(&aside, path);
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => tracing::warn!(file = %path.display(), "generated code keys"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating the keys file {}", path.display()));
            }
        }
    }
    figment::Figment::new()
        .merge(Toml::file_exact(path))
        .extract::<KeysFile>()
        .with_context(|| format!("reading the keys file {}", path.display()))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Secret<String> {
        Secret::new(BASE64.encode([b; 32]))
    }

    #[test]
    fn production_without_keys_refuses_and_names_what_is_missing() {
        let mut config = Config {
            mode: Mode::Production,
            ..Config::default()
        };
        config.secrets.hmac_key = Some(key(1));
        let e = format!("{:#}", load_vault(&config).unwrap_err());
        assert!(e.contains("secrets.encryption_keys"), "{e}");
        assert!(e.contains("secrets.current_key_id"), "{e}");
        assert!(!e.contains("secrets.hmac_key,"), "{e}");
    }

    #[test]
    fn configured_keys_are_used_and_never_shown() {
        let mut config = Config {
            mode: Mode::Production,
            ..Config::default()
        };
        config.secrets.hmac_key = Some(key(1));
        config.secrets.encryption_keys.insert("k1".into(), key(2));
        config.secrets.current_key_id = "k1".into();
        let vault = load_vault(&config).unwrap();
        assert_eq!(vault.current_key_id(), "k1");
        assert!(!format!("{config:?}{vault:?}").contains(&key(2).expose().clone()));

        config
            .secrets
            .encryption_keys
            .insert("k1".into(), Secret::new("c2hvcnQ=".into()));
        let e = format!("{:#}", load_vault(&config).unwrap_err());
        assert!(
            e.contains("secrets.encryption_keys.k1") && e.contains("32 bytes"),
            "{e}"
        );
        assert!(!e.contains("c2hvcnQ"), "{e}");
    }

    #[test]
    fn development_generates_keys_once_next_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("otpgate.db");
        let config = Config {
            database_url: Secret::new(format!("sqlite://{}", db.display())),
            ..Config::default()
        };
        let path = keys_file(&config);
        assert_eq!(path, dir.path().join("otpgate.db.secrets.toml"));
        let first = load_vault(&config).unwrap();
        let sealed = first.seal(1, "+9779851023212", "4821");
        let again = load_vault(&config).unwrap();
        let binding = otp_domain::vault::Binding {
            account_id: 1,
            e164: "+9779851023212",
            salt: &sealed.salt,
        };
        assert_eq!(
            again
                .open(&binding, &sealed.cipher, &sealed.key_id)
                .as_deref(),
            Some("4821")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn verify_settings_are_checked() {
        let mut config = Config::default();
        config.verify.default_expiry_seconds = 30;
        assert!(load_vault(&config).is_err());
    }
}
