//! Data lifecycle: the `[retention]` settings and the purge every node runs.
//!
//! [`Retention::from_config`] reads and checks the settings (with the old names
//! `verify.retention_seconds` and `verify.purge_interval_seconds` still read);
//! [`purge_once`] is one pass: the ciphers of codes past `code_seconds` after
//! expiry ([`otp_store::Store::purge_codes`]), then whole OTPs past
//! `otp_seconds` after their last status change, idempotency records past
//! `idempotency_seconds` and login counters whose window ended
//! ([`otp_store::RetentionStore::purge_expired_rows`], which keeps whatever is
//! live and never touches the ledger). [`purge_loop`] runs a pass every
//! `interval_seconds` until the server stops.

use std::time::Duration;

use anyhow::bail;
use tokio_util::sync::CancellationToken;

use otp_store::{IDEMPOTENCY_TTL, PurgeReport, RetentionRules, SharedStore, StoreError};

use crate::config::Config;

/// The default of `retention.code_seconds`.
const CODE_SECONDS: i64 = 86_400;
/// The default of `retention.interval_seconds`.
const INTERVAL_SECONDS: u64 = 60;

/// The checked settings, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `None`: OTPs are kept for ever.
    pub otp: Option<i64>,
    pub code: i64,
    pub idempotency: i64,
    pub login_window: i64,
    pub interval: Duration,
    pub chunk: usize,
}

impl Retention {
    /// The settings of `config`, or why they cannot be used.
    pub fn from_config(config: &Config) -> anyhow::Result<Retention> {
        let r = &config.retention;
        let v = &config.verify;
        let code = match (r.code_seconds, v.retention_seconds) {
            (Some(new), Some(old)) if new != old => bail!(
                "retention.code_seconds ({new}) and its old name verify.retention_seconds \
                 ({old}) disagree; set only retention.code_seconds"
            ),
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => CODE_SECONDS,
        };
        if code < 0 {
            bail!("retention.code_seconds cannot be negative");
        }
        let interval = match (r.interval_seconds, v.purge_interval_seconds) {
            (Some(new), Some(old)) if new != old => bail!(
                "retention.interval_seconds ({new}) and its old name \
                 verify.purge_interval_seconds ({old}) disagree; set only retention.interval_seconds"
            ),
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => INTERVAL_SECONDS,
        };
        if interval == 0 {
            bail!("retention.interval_seconds must be at least 1");
        }
        if r.chunk == 0 || r.chunk > 100_000 {
            bail!("retention.chunk must be between 1 and 100000");
        }
        let micros = |s: u64| i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let idempotency = micros(r.idempotency_seconds);
        if idempotency < IDEMPOTENCY_TTL {
            bail!(
                "retention.idempotency_seconds must be at least {} (an Idempotency-Key answers \
                 for 24 hours)",
                IDEMPOTENCY_TTL / 1_000_000
            );
        }
        let otp = (r.otp_seconds > 0).then(|| micros(r.otp_seconds));
        if otp.is_some_and(|otp| otp < idempotency) {
            bail!(
                "retention.otp_seconds must be at least retention.idempotency_seconds \
                 (a replayed send answers from its OTP), or 0 to keep OTPs for ever"
            );
        }
        Ok(Retention {
            otp,
            code: micros(code as u64),
            idempotency,
            login_window: micros(config.auth.login_window_seconds),
            interval: Duration::from_secs(interval),
            chunk: r.chunk,
        })
    }

    /// What a pass at `now` removes.
    pub fn rules(&self, now: i64) -> RetentionRules {
        RetentionRules {
            now,
            otps_before: self.otp.map(|otp| now.saturating_sub(otp)),
            idempotency_before: now.saturating_sub(self.idempotency),
            login_windows_ended: now.saturating_sub(self.login_window),
            chunk: self.chunk,
        }
    }
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Ciphers of expired codes dropped (their OTPs stay, masked).
    pub codes: u64,
    pub rows: PurgeReport,
    /// Conversion rows of minutes past [`otp_store::conversions::KEEP_MICROS`].
    pub conversions: u64,
}

/// One purge pass at `now` (the worker step; [`purge_loop`] only adds waiting).
pub async fn purge_once(
    store: &SharedStore,
    retention: &Retention,
    now: i64,
) -> Result<Purged, StoreError> {
    let codes = store
        .purge_codes(now.saturating_sub(retention.code))
        .await?;
    let rows = store.purge_expired_rows(retention.rules(now)).await?;
    let conversions = store
        .purge_conversions(now.saturating_sub(otp_store::conversions::KEEP_MICROS))
        .await?;
    Ok(Purged {
        codes,
        rows,
        conversions,
    })
}

/// Runs [`purge_once`] every `retention.interval_seconds` until `stop` is
/// cancelled.
pub async fn purge_loop(store: SharedStore, retention: Retention, stop: CancellationToken) {
    loop {
        match purge_once(&store, &retention, otp_store::now_micros()).await {
            Ok(p) if p == Purged::default() => {}
            Ok(p) => tracing::info!(
                codes = p.codes,
                otps = p.rows.otps,
                idempotency = p.rows.idempotency,
                login_counters = p.rows.login_counters,
                guard_holds = p.rows.guard_holds,
                conversions = p.conversions,
                "purged what is past its retention"
            ),
            Err(e) => tracing::warn!(error = %e, "the retention purge failed; will retry"),
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retention.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    fn load(toml: &str) -> anyhow::Result<Retention> {
        let config: Config = Figment::new().merge(Toml::string(toml)).extract()?;
        Retention::from_config(&config)
    }

    #[test]
    fn the_defaults_keep_otps_ninety_days_and_idempotency_a_day() {
        let r = load("").unwrap();
        assert_eq!(r.otp, Some(90 * 86_400 * 1_000_000));
        assert_eq!(r.idempotency, 86_400 * 1_000_000);
        assert_eq!(r.code, 86_400 * 1_000_000);
        assert_eq!(r.interval, Duration::from_secs(60));
        assert_eq!(r.login_window, 900 * 1_000_000);
    }

    #[test]
    fn the_old_verify_names_are_still_read() {
        let r = load("[verify]\nretention_seconds = 3600\npurge_interval_seconds = 5").unwrap();
        assert_eq!(r.code, 3600 * 1_000_000);
        assert_eq!(r.interval, Duration::from_secs(5));
        let r =
            load("[retention]\ncode_seconds = 3600\n[verify]\nretention_seconds = 3600").unwrap();
        assert_eq!(r.code, 3600 * 1_000_000);
        let e = load("[retention]\ncode_seconds = 60\n[verify]\nretention_seconds = 3600")
            .unwrap_err()
            .to_string();
        assert!(e.contains("disagree"), "{e}");
    }

    #[test]
    fn settings_that_would_lose_a_replay_or_never_run_are_refused() {
        for (toml, says) in [
            ("[retention]\nidempotency_seconds = 60", "at least 86400"),
            (
                "[retention]\notp_seconds = 3600",
                "at least retention.idempotency_seconds",
            ),
            ("[retention]\ninterval_seconds = 0", "at least 1"),
            ("[retention]\nchunk = 0", "between 1 and"),
            ("[retention]\ncode_seconds = -1", "negative"),
        ] {
            let e = load(toml).unwrap_err().to_string();
            assert!(e.contains(says), "{toml}: {e}");
        }
        assert_eq!(load("[retention]\notp_seconds = 0").unwrap().otp, None);
    }
}
