//! The channel fallback scan: every delivery poll, the store starts the
//! fallback calls that are due (or gives back the credits of those no longer
//! needed, [`otp_store::fallback`]) and the voice worker is woken for the
//! calls it queued. Every node runs it; the store's row locks make each
//! fallback start once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use otp_store::{FallbackScan, SharedStore, StoreError, now_micros};

use crate::metrics::Metrics;

/// Most fallbacks one scan takes; the next scan takes the rest.
pub const SCAN_BATCH: usize = 256;

/// One scan at `now`: starts what is due and wakes the voice worker when a
/// call was queued. The step tests call.
pub async fn scan_once(
    store: &SharedStore,
    voice_jobs: &Notify,
    metrics: &Metrics,
    now: otp_store::Micros,
) -> Result<FallbackScan, StoreError> {
    let scan = store.start_fallbacks(now, SCAN_BATCH).await?;
    if scan.started > 0 {
        voice_jobs.notify_one();
    }
    for (outcome, n) in [("started", scan.started), ("refunded", scan.refunded)] {
        for _ in 0..n {
            metrics.inc("otpgate_fallbacks_total", &[("outcome", outcome)]);
        }
    }
    Ok(scan)
}

/// Scans every `interval` until `stop`.
pub async fn scan_loop(
    store: SharedStore,
    voice_jobs: Arc<Notify>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match scan_once(&store, &voice_jobs, &metrics, now_micros()).await {
            Ok(FallbackScan {
                started: 0,
                refunded: 0,
            }) => {}
            Ok(scan) => tracing::debug!(
                started = scan.started,
                refunded = scan.refunded,
                "channel fallbacks"
            ),
            Err(e) => tracing::warn!(error = %e, "the channel fallback scan failed; will retry"),
        }
    }
}
