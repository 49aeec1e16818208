//! Route windows: each route's newest finished OTPs, delivered or not,
//! with the median time to the receipt; an OTP whose receipt is overdue
//! counts as failed, a recent one without its receipt not at all, and on a
//! route without receipts a sent OTP counts as delivered.

use otp_store::routing::{RouteWindow, WindowQuery, WindowRoute};
use otp_store::test_support::sample_otp;
use otp_store::{OtpStatus, Receipt};

use crate::{claim_at, sent};

const SECOND: i64 = 1_000_000;

fn receipt(route: &str, id: &str, status: OtpStatus, at: i64) -> Receipt {
    Receipt {
        route: route.into(),
        message_ids: vec![id.into()],
        status: Some(status),
        state: if status == OtpStatus::Delivered {
            "DELIVRD"
        } else {
            "UNDELIV"
        }
        .into(),
        error_code: None,
        at,
    }
}

fn counts(w: &RouteWindow) -> (&str, u32, u32) {
    (w.route.as_str(), w.delivered, w.failed)
}

crate::contract! {
    async fn a_routes_window_holds_its_newest_finished_otps(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap();
        for _ in 0..6 {
            store.accept(sample_otp(account.id)).await.unwrap();
        }
        let mut jobs = claim_at(&store, otp_store::now_micros()).await;
        jobs.sort_by_key(|j| j.otp.id);
        assert_eq!(jobs.len(), 6);
        for (i, job) in jobs.iter().enumerate() {
            let route = if i < 5 { "ntc" } else { "ncell" };
            sent(&store, job, route, &[&format!("m{i}")]).await;
        }
        let created = |i: usize| jobs[i].otp.created_at;
        store
            .record_receipts(vec![
                receipt("ntc", "m0", OtpStatus::Delivered, created(0) + 2 * SECOND),
                receipt("ntc", "m1", OtpStatus::Undeliverable, created(1) + SECOND),
                receipt("ntc", "m2", OtpStatus::Delivered, created(2) + 4 * SECOND),
                receipt("ntc", "m3", OtpStatus::Delivered, created(3) + 6 * SECOND),
                receipt("ncell", "m5", OtpStatus::Delivered, created(5) + SECOND),
            ])
            .await
            .unwrap();
        let now = otp_store::now_micros();
        let with_receipts = |name: &str| WindowRoute {
            name: name.into(),
            receipts: true,
        };
        let query = |last: u32, no_receipt_before: i64| WindowQuery {
            routes: vec![with_receipts("ntc"), with_receipts("idle"), with_receipts("ncell")],
            last,
            no_receipt_before,
        };

        // m4's receipt may still come: it is not finished.
        let windows = store.route_windows(query(200, now - 3600 * SECOND)).await.unwrap();
        let seen: Vec<_> = windows.iter().map(counts).collect();
        assert_eq!(seen, [("ntc", 3, 1), ("idle", 0, 0), ("ncell", 1, 0)]);
        assert_eq!(windows[0].median_receipt_ms, Some(4_000), "of 2 s, 4 s and 6 s");
        assert_eq!(windows[1].delivery_rate(), None);

        // Its receipt is overdue: it failed.
        let overdue = store.route_windows(query(200, now + SECOND)).await.unwrap();
        assert_eq!(counts(&overdue[0]), ("ntc", 3, 2));

        // A window of two holds the newest two finished OTPs only.
        let short = store.route_windows(query(2, now - 3600 * SECOND)).await.unwrap();
        assert_eq!(counts(&short[0]), ("ntc", 2, 0), "m3 and m2");
        let short = store.route_windows(query(2, now + SECOND)).await.unwrap();
        assert_eq!(counts(&short[0]), ("ntc", 1, 1), "m4 and m3");

        // A route whose carrier sends no receipts: sent is delivered, at once.
        let without = WindowQuery {
            routes: vec![WindowRoute { name: "ntc".into(), receipts: false }],
            ..query(200, now - 3600 * SECOND)
        };
        let windows = store.route_windows(without).await.unwrap();
        assert_eq!(counts(&windows[0]), ("ntc", 4, 1));
    }
}
