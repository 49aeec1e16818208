//! Route windows: how each carrier route delivered its newest messages, read
//! from the OTPs themselves, so every node sharing the database measures the
//! same thing without keeping or exchanging counters. What to do with the
//! numbers (weights, demotion, probes) is the service's business.
//!
//! A route's window is its newest `last` *finished* OTPs, highest id first
//! (the index `otps (route, id)` of migration 24 walks them):
//! - `delivered` and `verified` count as delivered, with the time from
//!   acceptance to the receipt when a receipt came;
//! - `undeliverable`, `expired` and `rejected` count as failed;
//! - `sent` with no receipt since before [`WindowQuery::no_receipt_before`]
//!   counts as failed too (a route that swallows messages is as bad as one
//!   that refuses them), while a more recent `sent` is not finished yet and
//!   stays out of the window;
//! - but on a route whose carrier sends no receipts ([`WindowRoute::receipts`]
//!   false: an HTTP API, a SIP trunk, an SMSC not asked for them) `sent` is
//!   as far as an OTP goes, and counts as delivered at once.
//!
//! Both backends run [`WINDOW_SQL`] and fold its rows with [`RouteWindow::fold`].

use crate::{Micros, StoreError};

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowQuery {
    /// The routes (from the configuration: a bounded list).
    pub routes: Vec<WindowRoute>,
    /// How many finished OTPs make a window.
    pub last: u32,
    /// An OTP still `sent` whose status dates from before this instant is
    /// counted as failed: its receipt is not coming.
    pub no_receipt_before: Micros,
}

/// One route to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRoute {
    pub name: String,
    /// Whether its carrier sends delivery receipts; without them, `sent`
    /// counts as delivered.
    pub receipts: bool,
}

impl WindowQuery {
    /// The instant before which a `sent` OTP of `route` is finished.
    pub(crate) fn sent_before(&self, route: &WindowRoute) -> Micros {
        if route.receipts {
            self.no_receipt_before
        } else {
            Micros::MAX
        }
    }
}

/// One route's window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteWindow {
    pub route: String,
    /// Finished OTPs that reached the handset.
    pub delivered: u32,
    /// Finished OTPs that did not.
    pub failed: u32,
    /// The median time from acceptance to the delivery receipt, over the
    /// delivered OTPs that had one; `None` when none had.
    pub median_receipt_ms: Option<i64>,
}

impl RouteWindow {
    /// Finished OTPs in the window.
    pub fn results(&self) -> u32 {
        self.delivered + self.failed
    }

    /// Delivered over finished; `None` for an empty window.
    pub fn delivery_rate(&self) -> Option<f64> {
        let n = self.results();
        (n > 0).then(|| f64::from(self.delivered) / f64::from(n))
    }

    /// The window of `route` from [`WINDOW_SQL`]'s rows: whether each OTP was
    /// delivered (1), failed (0) or is still `sent` (2), and its
    /// acceptance-to-receipt time.
    pub(crate) fn fold(
        route: &WindowRoute,
        rows: impl IntoIterator<Item = (i64, Option<i64>)>,
    ) -> RouteWindow {
        let mut window = RouteWindow {
            route: route.name.clone(),
            ..RouteWindow::default()
        };
        let mut latencies = Vec::new();
        for (outcome, latency) in rows {
            match outcome {
                1 => {
                    window.delivered += 1;
                    latencies.extend(latency.map(|us| us.max(0) / 1000));
                }
                2 if !route.receipts => window.delivered += 1,
                _ => window.failed += 1,
            }
        }
        latencies.sort_unstable();
        window.median_receipt_ms = latencies
            .get(latencies.len().saturating_sub(1) / 2)
            .copied();
        window
    }
}

/// A route's newest finished OTPs: whether each was delivered (1), failed
/// (0) or is still `sent` (2), and its acceptance-to-receipt time.
/// Parameters: the route, [`WindowQuery::sent_before`], the window's size;
/// `placeholder` is `?` (SQLite) or `$` (PostgreSQL).
pub(crate) fn window_sql(placeholder: char) -> String {
    WINDOW_SQL.replace('?', &placeholder.to_string())
}

/// See [`window_sql`].
pub(crate) const WINDOW_SQL: &str = "SELECT CASE WHEN status IN ('delivered', 'verified') \
     THEN 1 WHEN status = 'sent' THEN 2 ELSE 0 END, delivered_at - created_at FROM otps \
     WHERE route = ?1 AND (status IN ('delivered', 'verified', 'undeliverable', 'expired', \
     'rejected') OR (status = 'sent' AND status_at < ?2)) ORDER BY id DESC LIMIT ?3";

/// Measuring routes.
#[async_trait::async_trait]
pub trait RoutingStore {
    /// The window of each route of `query`, in the query's order (a route
    /// with nothing finished has an empty window).
    async fn route_windows(&self, query: WindowQuery) -> Result<Vec<RouteWindow>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_deliveries_and_failures_and_takes_the_median_receipt_time() {
        let ntc = WindowRoute {
            name: "ntc".into(),
            receipts: true,
        };
        let w = RouteWindow::fold(
            &ntc,
            [
                (1, Some(3_000_000)),
                (0, None),
                (1, Some(1_000_000)),
                (1, None),
                (1, Some(9_000_000)),
                (0, Some(5_000_000)),
                (2, None),
            ],
        );
        assert_eq!((w.delivered, w.failed, w.results()), (4, 3, 7));
        assert_eq!(w.delivery_rate(), Some(4.0 / 7.0));
        assert_eq!(w.median_receipt_ms, Some(3_000), "of 1 s, 3 s and 9 s");
        let without_receipts = WindowRoute {
            name: "sparrow".into(),
            receipts: false,
        };
        let w = RouteWindow::fold(&without_receipts, [(2, None), (2, None), (0, None)]);
        assert_eq!((w.delivered, w.failed), (2, 1), "sent is as far as it goes");
        let empty = RouteWindow::fold(&ntc, []);
        assert_eq!(
            (empty.delivery_rate(), empty.median_receipt_ms),
            (None, None)
        );
    }

    #[test]
    fn the_sql_takes_each_backends_placeholders() {
        assert!(window_sql('$').contains("route = $1"));
        assert!(window_sql('$').contains("LIMIT $3"));
        assert!(window_sql('?').contains("status_at < ?2"));
    }
}
