//! Delivery receipts: finding the part, one final receipt a part, held
//! receipts, refunds and messages of several parts.

use otp_store::{OtpStatus, Receipt};
use smpp::receipt::ids::IdLookup;

use crate::{claimed_send, sent};

fn receipt(ids: &[&str], state: &str, status: Option<OtpStatus>) -> Receipt {
    Receipt {
        route: "smsc".into(),
        message_ids: ids.iter().map(|s| s.to_string()).collect(),
        status,
        state: state.into(),
        error_code: (status == Some(OtpStatus::Undeliverable)).then(|| "001".to_owned()),
        at: otp_store::now_micros(),
    }
}

fn delivered(ids: &[&str]) -> Receipt {
    receipt(ids, "DELIVRD", Some(OtpStatus::Delivered))
}

fn undeliverable(ids: &[&str]) -> Receipt {
    receipt(ids, "UNDELIV", Some(OtpStatus::Undeliverable))
}

crate::contract! {
    async fn a_receipt_finds_its_part_by_every_spelling_of_its_id(store) {
        let (account, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["0000001F"]).await;
        for spelling in ["0000001F", "1f", "1F", "0x1f", "31"] {
            let lookup = IdLookup::of(spelling).unwrap();
            let found = store.receipt_candidates("smsc", vec![lookup]).await.unwrap();
            assert_eq!(found, [vec!["0000001F".to_owned()]], "{spelling}");
        }
        let other_route = store
            .receipt_candidates("other", vec![IdLookup::of("1f").unwrap()])
            .await
            .unwrap();
        assert_eq!(other_route, [Vec::<String>::new()]);
        // The first spelling on record wins.
        let rc = delivered(&["1f", "0000001F"]);
        let at = rc.at;
        let applied = store.record_receipts(vec![rc]).await.unwrap();
        assert_eq!(applied, [Some(job.otp.id)]);
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!((otp.status, otp.status_at, otp.delivered_at), (OtpStatus::Delivered, at, Some(at)));
    }

    async fn every_kind_of_id_is_found_by_another_spelling(store) {
        // A hex id (read as decimal too), a decimal id (both readings), ids
        // with neither (the log driver's, an aggregator's), and a padded
        // upper-case hex id, the one whose text form (`1f`) is not the id as
        // written: since migration 28 each index of a form holds only the
        // parts a lookup reaches through it.
        let (_, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["1d0bb113", "31", "log-1", "5f0c-77aa", "0000001F"]).await;
        let lookups = ["487305491", "1D0BB113", "1f", "LOG-1", "5F0C-77AA", "0x0000001f"]
            .iter()
            .map(|id| IdLookup::of(id).unwrap())
            .collect();
        let mut found = store.receipt_candidates("smsc", lookups).await.unwrap();
        found.iter_mut().for_each(|ids| ids.sort());
        assert_eq!(
            found,
            [
                vec!["1d0bb113"],
                vec!["1d0bb113"],
                // `1f` is the text form of one and the hex reading of the other.
                vec!["0000001F", "31"],
                vec!["log-1"],
                vec!["5f0c-77aa"],
                vec!["0000001F", "31"],
            ]
        );
    }

    async fn a_final_receipt_is_not_overwritten_by_a_later_one(store) {
        let (account, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["m1"]).await;
        let first = store.record_receipts(vec![delivered(&["m1"])]).await.unwrap();
        let later = store.record_receipts(vec![undeliverable(&["m1"])]).await.unwrap();
        assert_eq!((first, later), (vec![Some(job.otp.id)], vec![None]));
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!((otp.status, otp.refunded, otp.error_code), (OtpStatus::Delivered, false, None));
        assert!(otp.delivered_at.is_some(), "a later failure leaves the delivery's time");
        let (events, ids) = store.otp_history(job.otp.id).await.unwrap();
        let after_send: Vec<&str> = events.iter().map(|e| e.status.as_str()).filter(|s| *s != "sent").collect();
        assert_eq!(after_send, ["delivered"]);
        assert_eq!(ids, ["m1"]);
    }

    async fn a_receipt_that_is_not_final_is_history_and_the_final_one_still_lands(store) {
        let (account, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["m1"]).await;
        let enroute = store.record_receipts(vec![receipt(&["m1"], "ENROUTE", None)]).await.unwrap();
        let fin = store.record_receipts(vec![delivered(&["m1"])]).await.unwrap();
        assert_eq!((enroute, fin), (vec![Some(job.otp.id)], vec![Some(job.otp.id)]));
        let (events, _) = store.otp_history(job.otp.id).await.unwrap();
        let details: Vec<(&str, Option<&str>)> = events
            .iter()
            .filter(|e| e.status != "sent")
            .map(|e| (e.status.as_str(), e.detail.as_deref()))
            .collect();
        assert_eq!(details, [("receipt", Some("part 1: ENROUTE")), ("delivered", Some("part 1: DELIVRD"))]);
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Delivered);
    }

    async fn a_receipt_for_an_id_not_recorded_yet_is_held_until_the_part_is(store) {
        let (account, job) = claimed_send(&store).await;
        let early = store.record_receipts(vec![delivered(&["m9"])]).await.unwrap();
        assert_eq!(early, [None], "no part has the id yet");
        let (events, _) = store.otp_history(job.otp.id).await.unwrap();
        assert!(events.is_empty(), "{events:?}");
        sent(&store, &job, "smsc", &["m9"]).await;
        let retried = store.record_receipts(vec![delivered(&["m9"])]).await.unwrap();
        assert_eq!(retried, [Some(job.otp.id)]);
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Delivered);
    }

    async fn an_undeliverable_receipt_fails_the_otp_and_refunds_it_once(store) {
        let (account, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["m1"]).await;
        let applied = store
            .record_receipts(vec![undeliverable(&["m1"]), undeliverable(&["m1"])])
            .await
            .unwrap();
        assert_eq!(applied, [Some(job.otp.id), None]);
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Undeliverable);
        assert_eq!(
            (otp.error.as_deref(), otp.error_code.as_deref(), otp.refunded),
            (Some("carrier reported UNDELIV"), Some("001"), true)
        );
        assert_eq!(store.account(account).await.unwrap().unwrap().sms_credits, 10);
        let notes: Vec<Option<String>> = store
            .ledger(account)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "refund")
            .map(|e| e.note)
            .collect();
        assert_eq!(notes, [Some("carrier reported undeliverable".to_owned())]);
    }

    async fn a_message_of_several_parts_is_delivered_with_its_last_part(store) {
        let (account, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["p1", "p2"]).await;
        store.record_receipts(vec![delivered(&["p2"])]).await.unwrap();
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Sent, "one part of two");
        store.record_receipts(vec![delivered(&["p1"])]).await.unwrap();
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Delivered);
        let (events, ids) = store.otp_history(job.otp.id).await.unwrap();
        let labels: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
        assert_eq!(labels, ["sent", "receipt", "delivered"]);
        assert_eq!(ids, ["p1", "p2"]);
    }

    async fn a_part_whose_otp_is_gone_still_takes_its_receipt_as_history(store) {
        let gone = 999_001;
        let result = otp_store::JobResult {
            job_id: gone,
            otp_id: gone,
            outcome: otp_store::JobOutcome::Sent { route: Some("smsc".into()), message_ids: vec!["g1".into()] },
            at: otp_store::now_micros(),
        };
        store.finish_jobs(vec![result]).await.unwrap();
        let applied = store.record_receipts(vec![undeliverable(&["g1"])]).await.unwrap();
        assert_eq!(applied, [Some(gone)]);
        let (events, ids) = store.otp_history(gone).await.unwrap();
        let labels: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
        assert_eq!((labels, ids), (vec!["sent", "receipt"], vec!["g1".to_owned()]));
    }
}
