//! Finishing delivery jobs: refunds, retries, what a report keeps, and
//! corrupt rows.

use otp_domain::channel::{Channel, Voice};
use otp_domain::credits::Cost;
use otp_store::{
    JobLease, JobOutcome, NewFallback, NewOtp, OtpRecord, OtpStatus, ResendOf, SendFallback,
    StoreError, VerifyOutcome, VerifyRequest,
};

use crate::admission::sms;
use crate::{claim_at, claimed_send, finish, sent, tamper};

const SECOND: i64 = 1_000_000;

/// Asserts the record a leased job was handed is the one reading its row
/// back gives, field by field (a record's debug form hides the code, so a
/// whole-record difference alone would not say where).
fn same_record(handed: &OtpRecord, read: &OtpRecord) {
    macro_rules! same {
        ($($field:ident),* $(,)?) => {
            $(assert_eq!(handed.$field, read.$field, concat!("the handed record's ", stringify!($field)));)*
        };
    }
    same!(
        id,
        account_id,
        account_seq,
        number,
        template,
        otp_option,
        channel,
        voice,
        length_factor,
        company_name,
        segments,
        credits_used,
        status,
        status_at,
        error,
        provider_message_id,
        created_at,
        route,
        error_code,
        delivered_at,
        refunded,
        expires_at,
        verified_at,
        verify_attempts,
        resend_of,
        fallback,
    );
    assert!(handed.code == read.code, "the handed record's code");
    assert!(handed == read, "a field the list above misses differs");
}

fn lease() -> Option<JobLease> {
    Some(JobLease {
        node: "node-a".into(),
        until: otp_store::now_micros() + 30 * SECOND,
    })
}

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
        assert_eq!(leased.otp.id, accepted.id);
        same_record(&leased.otp, &store.otp(account.id, accepted.id).await.unwrap().unwrap());
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
        let jobs = store.leased_jobs(vec![leased.clone()]).await.unwrap();
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!((job.job_id, job.otp.id, job.attempts), (leased.job_id, accepted.id, 1));
        assert_eq!(job.otp.status, OtpStatus::Queued);
        assert_eq!(job.otp.message(), claimed[0].otp.message(), "it carries the code a claim reads back");
        assert!(job.otp.code_is_known());
        // Reading it again claims nothing and changes nothing.
        assert_eq!(store.leased_jobs(vec![leased.clone()]).await.unwrap().len(), 1);
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

    async fn a_leased_job_carries_the_record_its_send_wrote_as_a_read_gives_it_back(store) {
        let account = store.create_account("acme", 10, 10).await.unwrap().id;
        let key_id = store
            .create_key(otp_store::NewApiKey {
                key_id: format!("k{account}abcdefghij"),
                account_id: account,
                secret_hash: [7; 32],
                label: None,
                scopes: otp_store::Scopes::DEFAULT,
            })
            .await
            .unwrap()
            .id;
        let acme = otp_domain::sender::SenderId::parse("ACME").unwrap();
        store.set_account_sender(account, "smsc", &acme, otp_store::now_micros()).await.unwrap();
        let voice = NewOtp {
            channel: Channel::Voice,
            voice: Some(Voice::NpShreegya),
            length_factor: Some(1.25),
            company_name: Some("Acme Bank".into()),
            cost: Cost { sms: 0, phone: 1 },
            ..sms(account, 1)
        };
        let with_call = NewOtp {
            fallback: SendFallback::Call(NewFallback {
                voice: Voice::NpBinod,
                due_at: otp_store::now_micros() + 40 * SECOND,
                phone_credits: 2,
            }),
            segments: 2,
            cost: Cost { sms: 2, phone: 0 },
            ..sms(account, 2)
        };
        // A resend of a code one wrong guess has been spent on: it shares the
        // chain's expiry and count.
        let first = NewOtp { api_key_id: Some(key_id), ..sms(account, 3) };
        let chain_expires = first.created_at + 90 * SECOND;
        let head = store.accept(NewOtp { expires_at: chain_expires, ..first.clone() }).await.unwrap();
        let wrong = store
            .verify(VerifyRequest { code: "000000".into(), ..otp_store::test_support::verify_sample(account, head.id, otp_store::now_micros()) })
            .await
            .unwrap();
        assert!(!matches!(wrong, VerifyOutcome::Verified { .. }), "{wrong:?}");
        let resend = NewOtp {
            created_at: first.created_at + SECOND,
            resend_of: Some(ResendOf { id: head.id, max_attempts: 3 }),
            ..first
        };
        let mut handed = Vec::new();
        for send in [voice, with_call, resend] {
            let accepted = store.accept_leased(send, None, lease()).await.unwrap();
            let leased = accepted.leased_job.expect("a leased send names its job");
            let read = store.otp(account, accepted.id).await.unwrap().unwrap();
            same_record(&leased.otp, &read);
            handed.push(leased);
        }
        assert_eq!(handed[0].otp.voice, Some(Voice::NpShreegya));
        assert_eq!(handed[1].otp.fallback.map(|f| (f.voice, f.credits)), Some((Voice::NpBinod, 2)));
        assert_eq!(
            (handed[2].otp.resend_of, handed[2].otp.verify_attempts, handed[2].otp.expires_at),
            (Some(head.id), 1, chain_expires)
        );
        // Started as a claim starts them: first attempt, the account's
        // senders, in job order.
        let jobs = store.leased_jobs(handed.iter().rev().cloned().collect()).await.unwrap();
        assert_eq!(
            jobs.iter().map(|j| (j.job_id, j.attempts)).collect::<Vec<_>>(),
            handed.iter().map(|j| (j.job_id, 1)).collect::<Vec<_>>()
        );
        for (job, leased) in jobs.iter().zip(&handed) {
            same_record(&job.otp, &leased.otp);
            assert_eq!(job.sender_for("smsc").map(|s| s.as_str()), Some("ACME"));
        }
    }
}
