//! Conversion aggregates: counted by the transactions that change a
//! status, grouped by channel, route, country and operator prefix, with
//! the latencies medians are read from; purged by minute.

use otp_domain::channel::Channel;
use otp_domain::phone::PhoneNumber;
use otp_store::conversions::{Counts, Dimension, StatsGroup, StatsQuery};
use otp_store::{JobOutcome, OtpStatus, Receipt, VerifyOutcome, VerifyRequest};

use otp_store::test_support::sample_otp as text_otp;

use crate::{claim_at, finish, sent};

const MINUTE: i64 = 60_000_000;

fn receipt(id: &str, status: OtpStatus, state: &str, at: i64) -> Receipt {
    Receipt {
        route: "smsc".into(),
        message_ids: vec![id.into()],
        status: Some(status),
        state: state.into(),
        error_code: None,
        at,
    }
}

fn group<'a>(groups: &'a [StatsGroup], name: &str) -> &'a Counts {
    &groups
        .iter()
        .find(|g| g.group == name)
        .unwrap_or_else(|| panic!("no group {name:?} in {groups:?}"))
        .counts
}

fn stats(account: i64, group_by: Dimension) -> StatsQuery {
    let now = otp_store::now_micros();
    StatsQuery {
        account_id: account,
        from: now - 60 * MINUTE,
        to: now + MINUTE,
        group_by,
    }
}

crate::contract! {
    async fn sends_deliveries_failures_and_verifications_are_counted_where_they_happen(store) {
        let account = store.create_account("acme", 3, 0).await.unwrap();
        let ntc = text_otp(account.id);
        let ncell = otp_store::NewOtp {
            number: PhoneNumber::parse("9801234567").unwrap(),
            ..text_otp(account.id)
        };
        let first = store.accept(ntc).await.unwrap();
        let second = store.accept(ncell).await.unwrap();
        // Refused (no credits left after this one): counted nowhere.
        store.accept(text_otp(account.id)).await.unwrap();
        assert!(store.accept(text_otp(account.id)).await.is_err());

        let jobs = claim_at(&store, otp_store::now_micros()).await;
        let job = |id: i64| jobs.iter().find(|j| j.otp.id == id).unwrap();
        sent(&store, job(first.id), "smsc", &["m1"]).await;
        sent(&store, job(second.id), "smsc", &["m2"]).await;
        let created = job(first.id).otp.created_at;
        store
            .record_receipts(vec![
                receipt("m1", OtpStatus::Delivered, "DELIVRD", created + 3_000_000),
                receipt("m2", OtpStatus::Undeliverable, "UNDELIV", otp_store::now_micros()),
            ])
            .await
            .unwrap();
        // A repeated receipt moves nothing and counts nothing.
        store
            .record_receipts(vec![receipt("m1", OtpStatus::Delivered, "DELIVRD", created)])
            .await
            .unwrap();
        let verify = |now: i64| VerifyRequest {
            account_id: account.id,
            phone_number: None,
            otp_id: Some(first.id),
            api_key_id: None,
            code: "482193".into(),
            max_attempts: 3,
            now,
        };
        let outcome = store.verify(verify(created + 40_000_000)).await.unwrap();
        assert!(matches!(outcome, VerifyOutcome::Verified { .. }), "{outcome:?}");
        let again = store.verify(verify(created + 50_000_000)).await.unwrap();
        assert!(matches!(again, VerifyOutcome::AlreadyVerified { .. }), "{again:?}");
        // The third send's job fails before any carrier took it.
        let third = jobs.iter().find(|j| j.otp.id != first.id && j.otp.id != second.id).unwrap();
        finish(&store, third, JobOutcome::Failed { error: "no route".into() }).await;

        let by_prefix = store.conversion_stats(stats(account.id, Dimension::Prefix)).await.unwrap();
        let ntc = group(&by_prefix, "+977985");
        assert_eq!(
            (ntc.sent, ntc.submitted, ntc.delivered, ntc.verified, ntc.failed),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(ntc.delivery.median_ms(), Some(3_500), "one 3 s delivery: the middle of (2 s, 5 s]");
        assert_eq!((ntc.verify.count(), ntc.verify.sum_ms), (1, 40_000));
        let ncell = group(&by_prefix, "+977980");
        assert_eq!((ncell.sent, ncell.delivered, ncell.failed), (1, 0, 1));

        let by_route = store.conversion_stats(stats(account.id, Dimension::Route)).await.unwrap();
        let smsc = group(&by_route, "smsc");
        assert_eq!((smsc.submitted, smsc.delivered, smsc.failed, smsc.verified), (2, 1, 1, 1));
        let unrouted = group(&by_route, "");
        assert_eq!((unrouted.sent, unrouted.failed), (3, 1), "sends and a failure before any route");

        let by_country = store.conversion_stats(stats(account.id, Dimension::Country)).await.unwrap();
        assert_eq!(by_country.len(), 1);
        assert_eq!(group(&by_country, "977").sent, 3);
        let by_channel = store.conversion_stats(stats(account.id, Dimension::Channel)).await.unwrap();
        assert_eq!(group(&by_channel, "text").verified, 1);

        let other = store.create_account("other", 1, 0).await.unwrap();
        assert!(store.conversion_stats(stats(other.id, Dimension::Channel)).await.unwrap().is_empty());

        let minutes = store
            .sends_per_minute(account.id, created - 60 * MINUTE, created + MINUTE)
            .await
            .unwrap();
        assert_eq!(minutes.iter().map(|m| m.sent).sum::<i64>(), 3);
        assert!(minutes.iter().all(|m| m.channel == Channel::Text));

        let live: i64 = store.live_totals().iter().map(|(_, c)| c.sent).sum();
        assert_eq!(live, 3, "this process's totals follow what it committed");
    }

    async fn rows_of_minutes_before_the_cut_are_purged_and_later_ones_stay(store) {
        let account = store.create_account("acme", 5, 0).await.unwrap();
        let now = otp_store::now_micros();
        let old = otp_store::NewOtp { created_at: now - 10 * 24 * 60 * MINUTE, ..text_otp(account.id) };
        store.accept(old).await.unwrap();
        store.accept(text_otp(account.id)).await.unwrap();
        let all = StatsQuery { from: now - 11 * 24 * 60 * MINUTE, ..stats(account.id, Dimension::Channel) };
        assert_eq!(group(&store.conversion_stats(all.clone()).await.unwrap(), "text").sent, 2);
        let removed = store.purge_conversions(now - otp_store::conversions::KEEP_MICROS).await.unwrap();
        assert_eq!(removed, 1);
        assert_eq!(group(&store.conversion_stats(all).await.unwrap(), "text").sent, 1);
    }
}
