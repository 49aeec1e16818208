//! Finishing delivery jobs: refunds, retries, what a report keeps, and
//! corrupt rows.

use otp_store::{JobOutcome, OtpStatus, StoreError};

use crate::{claim_at, claimed_send, finish, sent, tamper};

fn failed() -> JobOutcome {
    JobOutcome::Failed {
        error: "no route takes the number".into(),
    }
}

/// The refund rows of an account's ledger.
async fn refunds(store: &crate::Fresh, account: i64) -> Vec<(i64, i64, Option<String>)> {
    store
        .ledger(account)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "refund")
        .map(|e| (e.sms_delta, e.phone_delta, e.note))
        .collect()
}

crate::contract! {
    async fn a_failed_delivery_refunds_its_credits_exactly_once(store) {
        let (account, job) = claimed_send(&store).await;
        assert_eq!(store.account(account).await.unwrap().unwrap().sms_credits, 9);
        finish(&store, &job, failed()).await;
        finish(&store, &job, failed()).await;
        assert_eq!(store.account(account).await.unwrap().unwrap().sms_credits, 10);
        assert_eq!(
            refunds(&store, account).await,
            [(1, 0, Some("never handed to a carrier".to_owned()))]
        );
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Failed);
        assert!(otp.refunded);
        assert_eq!(otp.error.as_deref(), Some("no route takes the number"));
    }

    async fn a_sent_and_delivered_otp_is_never_refunded(store) {
        let (account, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["m1"]).await;
        let receipt = |state: &str, status| otp_store::Receipt {
            route: "smsc".into(),
            message_ids: vec!["m1".into()],
            status: Some(status),
            state: state.into(),
            error_code: None,
            at: otp_store::now_micros(),
        };
        let applied = store
            .record_receipts(vec![
                receipt("DELIVRD", OtpStatus::Delivered),
                receipt("UNDELIV", OtpStatus::Undeliverable),
            ])
            .await
            .unwrap();
        assert_eq!(applied, [Some(job.otp.id), None]);
        assert_eq!(store.account(account).await.unwrap().unwrap().sms_credits, 9);
        assert!(refunds(&store, account).await.is_empty());
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!((otp.status, otp.refunded), (OtpStatus::Delivered, false));
    }

    async fn a_retry_is_claimed_again_once_it_is_due(store) {
        let (account, job) = claimed_send(&store).await;
        let due = otp_store::now_micros() + 60_000_000;
        finish(&store, &job, JobOutcome::Retry { next_attempt_at: due, error: "throttled".into() }).await;
        assert!(claim_at(&store, due - 1).await.is_empty(), "not before it is due");
        let again = claim_at(&store, due).await;
        assert_eq!(again.iter().map(|j| (j.job_id, j.attempts)).collect::<Vec<_>>(), [(job.job_id, 2)]);
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!((otp.status, otp.error.as_deref()), (OtpStatus::Queued, Some("throttled")));
        let (events, _) = store.otp_history(job.otp.id).await.unwrap();
        let retries: Vec<_> = events.iter().filter(|e| e.status == "retry").map(|e| e.detail.as_deref()).collect();
        assert_eq!(retries, [Some("throttled")]);
        assert!(refunds(&store, account).await.is_empty());
    }

    async fn a_retry_reported_after_the_job_was_sent_does_not_queue_it_again(store) {
        let (_, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["m1"]).await;
        let due = otp_store::now_micros();
        finish(&store, &job, JobOutcome::Retry { next_attempt_at: due, error: "late".into() }).await;
        assert!(claim_at(&store, due + 120_000_000).await.is_empty(), "a sent job is not sent twice");
    }

    async fn a_send_reported_without_ids_keeps_the_ids_the_carrier_gave(store) {
        let (account, job) = claimed_send(&store).await;
        sent(&store, &job, "smsc", &["m1"]).await;
        finish(&store, &job, JobOutcome::Sent { route: None, message_ids: Vec::new() }).await;
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!(
            (otp.provider_message_id.as_deref(), otp.route.as_deref()),
            (Some("m1"), Some("smsc"))
        );
        assert_eq!(otp.status, OtpStatus::Sent);
    }

    async fn a_corrupt_stored_channel_status_number_or_template_reads_back_as_an_error(store) {
        let (account, job) = claimed_send(&store).await;
        for (column, word) in [("channel", "fax"), ("status", "lost"), ("otp_options", "guessed")] {
            tamper(&store, &format!("UPDATE otps SET {column} = '{word}' WHERE id = {}", job.otp.id)).await;
            let e = store.otp(account, job.otp.id).await.expect_err("a corrupt row is not read as a plausible one");
            let StoreError::Internal(message) = &e else { panic!("{e:?}") };
            assert!(message.contains(&format!("otps.{column}")) && message.contains(word), "{message}");
            assert!(!message.contains("482193"), "the error never shows the code");
            let restore = match column { "channel" => "text", "status" => "queued", _ => "personnel" };
            tamper(&store, &format!("UPDATE otps SET {column} = '{restore}' WHERE id = {}", job.otp.id)).await;
        }
        // A number or template that is not one: the error names the column, not the value.
        for (column, value, restore) in [
            ("e164", "9851023212", "+9779851023212"),
            ("e164", "+977-985", "+9779851023212"),
            ("template", "Code", "Code {otp}"),
        ] {
            tamper(&store, &format!("UPDATE otps SET {column} = '{value}' WHERE id = {}", job.otp.id)).await;
            let e = store.otp(account, job.otp.id).await.expect_err("a corrupt row is not read as a plausible one");
            let StoreError::Internal(message) = &e else { panic!("{e:?}") };
            assert!(message.contains(&format!("otps.{column}")) && !message.contains(value), "{message}");
            tamper(&store, &format!("UPDATE otps SET {column} = '{restore}' WHERE id = {}", job.otp.id)).await;
        }
        let otp = store.otp(account, job.otp.id).await.unwrap().unwrap();
        assert_eq!((otp.number.display(), otp.message()), ("9851023212", "Code 482193".to_owned()));
        tamper(&store, &format!("UPDATE otps SET channel = 'fax' WHERE id = {}", job.otp.id)).await;
        let e = store
            .finish_jobs(vec![otp_store::JobResult { job_id: job.job_id, otp_id: job.otp.id, outcome: failed(), at: 1 }])
            .await
            .expect_err("a failure of a corrupt row refunds nothing");
        assert!(e.to_string().contains("otps.channel"), "{e}");
        assert_eq!(store.account(account).await.unwrap().unwrap().sms_credits, 9);
    }

    async fn a_job_leased_as_its_send_is_written_is_read_as_claimed_and_no_claim_takes_it_before_its_lease_ends(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap();
        let now = otp_store::now_micros();
        let lease = otp_store::JobLease { node: "node-a".into(), until: now + 30_000_000 };
        let accepted = store
            .accept_leased(otp_store::test_support::sample_otp(account.id), None, Some(lease))
            .await
            .unwrap();
        let leased = accepted.leased_job.expect("a leased send names its job");
        assert_eq!(leased.otp_id, accepted.id);
        // A send without a lease is claimed as before, and names no job.
        let plain_otp = otp_store::test_support::sample_otp(account.id);
        // Claimed a second after it was made (a slow machine may take more
        // than a second to get here), well inside the other job's lease.
        let first_claim = plain_otp.created_at + 1_000_000;
        assert!(first_claim < now + 29_000_000);
        let plain = store.accept(plain_otp).await.unwrap();
        assert_eq!(plain.leased_job, None);
        let claimed = claim_at(&store, first_claim).await;
        assert_eq!(
            claimed.iter().map(|j| j.otp.id).collect::<Vec<_>>(),
            [plain.id],
            "the leased job is not due while its lease runs"
        );
        let jobs = store.leased_jobs(vec![leased]).await.unwrap();
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!((job.job_id, job.otp.id, job.attempts), (leased.job_id, accepted.id, 1));
        assert_eq!(job.otp.status, OtpStatus::Queued);
        assert_eq!(job.otp.message(), claimed[0].otp.message(), "its code is read back, as a claim reads it");
        assert!(job.otp.code_is_known());
        // Reading it again claims nothing and changes nothing.
        assert_eq!(store.leased_jobs(vec![leased]).await.unwrap().len(), 1);
        // A node that never gets to it: once the lease has run out, any claim
        // takes it, on its second attempt.
        let later = claim_at(&store, now + 30_500_000).await;
        assert_eq!(
            later.iter().map(|j| (j.job_id, j.attempts)).collect::<Vec<_>>(),
            [(leased.job_id, 2)]
        );
        sent(&store, &later[0], "smsc", &["m1"]).await;
        let otp = store.otp(account.id, accepted.id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Sent);
    }
}
