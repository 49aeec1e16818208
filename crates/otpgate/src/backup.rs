//! `otpgate backup` and `otpgate restore`: a consistent copy of a SQLite store
//! taken while the service runs, and putting one back.
//!
//! The copy is made with SQLite's online backup in one step (one read
//! transaction of the live database, which in WAL mode does not block the
//! writer), so it holds every send committed before it began and nothing of
//! the batches after; it is checked with `PRAGMA integrity_check` before the
//! command reports success. The code keys are not in the database: in
//! development mode they are in `secrets.file`, which must be kept with the
//! backup, or codes in it cannot be shown again (verification of new sends is
//! unaffected).
//!
//! PostgreSQL has its own tools (`pg_dump -Fc`, `pg_restore`), documented in the
//! README; these commands refuse a PostgreSQL URL and say so.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::Config;

/// The SQLite file the configuration names, or why there is none.
fn sqlite_path(config: &Config, what: &str) -> anyhow::Result<PathBuf> {
    let url = config.database_url.expose();
    match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        Some(_) => bail!("the database URL names no SQLite file"),
        None => bail!(
            "otpgate {what} copies SQLite databases; for PostgreSQL use pg_dump -Fc and \
             pg_restore (see the README, \"Backup and restore\")"
        ),
    }
}

/// `otpgate backup FILE`.
pub fn backup(config: &Config, file: &Path) -> anyhow::Result<()> {
    let source = sqlite_path(config, "backup")?;
    let report = otp_store::sqlite::backup(&source, file)
        .with_context(|| format!("backing up {} to {}", source.display(), file.display()))?;
    if report.integrity != "ok" {
        bail!(
            "the copy at {} fails its integrity check: {}",
            file.display(),
            report.integrity
        );
    }
    println!(
        "backed up {} to {} ({} pages, integrity ok)",
        source.display(),
        file.display(),
        report.pages
    );
    let keys = crate::codes::keys_file(config);
    if config.secrets.hmac_key.is_none() && keys.exists() {
        println!(
            "the code keys are not in the backup: keep {} with it",
            keys.display()
        );
    }
    Ok(())
}

/// `otpgate restore FILE`.
pub fn restore(config: &Config, file: &Path, replace: bool) -> anyhow::Result<()> {
    let dest = sqlite_path(config, "restore")?;
    let report = otp_store::sqlite::restore(file, &dest, replace)
        .with_context(|| format!("restoring {} to {}", file.display(), dest.display()))?;
    if report.integrity != "ok" {
        bail!(
            "the restored database {} fails its integrity check: {}",
            dest.display(),
            report.integrity
        );
    }
    println!(
        "restored {} to {} ({} pages, integrity ok)",
        file.display(),
        dest.display(),
        report.pages
    );
    Ok(())
}
