//! An account's own rules: approved templates, checked in the accepting
//! transaction, and senders per route, carried by its claimed jobs.

use otp_domain::message::MessageTemplate;
use otp_domain::sender::SenderId;
use otp_store::rules::MAX_TEMPLATES;
use otp_store::test_support::sample_otp;
use otp_store::{AcceptError, ListQuery, NewOtp, StoreError};

use crate::claim_at;

fn template(text: &str) -> MessageTemplate {
    MessageTemplate::parse(text).unwrap()
}

fn saying(account: i64, text: &str) -> NewOtp {
    NewOtp {
        template: template(text),
        ..sample_otp(account)
    }
}

crate::contract! {
    async fn a_restricted_account_sends_only_its_approved_templates_whatever_the_whitespace(store) {
        let acme = store.create_account("acme", 10, 0).await.unwrap();
        let other = store.create_account("other", 10, 0).await.unwrap();
        let now = otp_store::now_micros();
        assert!(store.add_account_template(acme.id, &template("Your  ACME code:\n{otp}"), now).await.unwrap());
        assert!(!store.add_account_template(acme.id, &template("Your ACME code: {otp} "), now).await.unwrap(),
            "the same text once normalized is approved already");
        let listed = store.account_templates(acme.id).await.unwrap();
        assert_eq!(listed.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(), ["Your ACME code: {otp}"]);

        store.accept(saying(acme.id, "  Your ACME\tcode:   {otp}\n")).await
            .expect("approved text with other whitespace passes");
        let refused = store.accept(saying(acme.id, "Your bank needs your PIN: {otp}")).await;
        assert!(matches!(refused, Err(AcceptError::TemplateNotApproved)), "{refused:?}");
        let refused = store.accept(saying(acme.id, "your acme code: {otp}")).await;
        assert!(matches!(refused, Err(AcceptError::TemplateNotApproved)), "case counts: {refused:?}");
        let after = store.account(acme.id).await.unwrap().unwrap();
        assert_eq!((after.sms_credits, after.otp_count), (9, 1), "only the approved send was charged");
        let page = store.list_otps(&ListQuery { account_id: acme.id, limit: 10, ..ListQuery::default() }).await.unwrap();
        assert_eq!(page.items.len(), 1, "nothing was written for the refused sends");

        store.accept(saying(other.id, "Anything {otp}")).await.expect("another account is unrestricted");

        assert!(store.remove_account_template(acme.id, " Your ACME code: {otp}").await.unwrap());
        assert!(!store.remove_account_template(acme.id, "Your ACME code: {otp}").await.unwrap());
        store.accept(saying(acme.id, "Anything {otp}")).await
            .expect("with no template left the account sends any text again");
    }

    async fn templates_are_replaced_at_once_bounded_and_need_an_account(store) {
        let acme = store.create_account("acme", 10, 0).await.unwrap();
        let now = otp_store::now_micros();
        let list = store.replace_account_templates(
            acme.id,
            vec![template("A {otp}"), template("A  {otp}"), template("B {otp}")],
            now,
        ).await.unwrap();
        assert_eq!(list.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(), ["A {otp}", "B {otp}"]);
        let many: Vec<_> = (0..MAX_TEMPLATES).map(|i| template(&format!("T{i} {{otp}}"))).collect();
        assert_eq!(store.replace_account_templates(acme.id, many, now).await.unwrap().len(), MAX_TEMPLATES);
        let over = store.add_account_template(acme.id, &template("One more {otp}"), now).await;
        assert!(matches!(over, Err(StoreError::Conflict(_))), "{over:?}");
        assert_eq!(store.account_templates(acme.id).await.unwrap().len(), MAX_TEMPLATES);
        assert!(store.replace_account_templates(acme.id, Vec::new(), now).await.unwrap().is_empty());
        let missing = store.add_account_template(acme.id + 100, &template("A {otp}"), now).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    }

    async fn a_claimed_job_carries_its_accounts_senders_and_no_one_elses(store) {
        let acme = store.create_account("acme", 10, 0).await.unwrap();
        let other = store.create_account("other", 10, 0).await.unwrap();
        let now = otp_store::now_micros();
        let sender = SenderId::parse("ACME").unwrap();
        store.set_account_sender(acme.id, "smsc", &SenderId::parse("OLD").unwrap(), now).await.unwrap();
        let set = store.set_account_sender(acme.id, "smsc", &sender, now).await.unwrap();
        assert_eq!(set.sender, sender, "a second set replaces the first");
        store.set_account_sender(other.id, "smsc", &SenderId::parse("9800").unwrap(), now).await.unwrap();
        let senders = store.account_senders(acme.id).await.unwrap();
        assert_eq!(senders.len(), 1);
        assert_eq!((senders[0].route.as_str(), &senders[0].sender), ("smsc", &sender));

        let accepted = store.accept(sample_otp(acme.id)).await.unwrap();
        let jobs = claim_at(&store, otp_store::now_micros()).await;
        let job = jobs.iter().find(|j| j.otp.id == accepted.id).expect("claimed");
        assert_eq!(job.sender_for("smsc"), Some(&sender));
        assert_eq!(job.sender_for("backup"), None);

        assert!(store.remove_account_sender(acme.id, "smsc").await.unwrap());
        assert!(!store.remove_account_sender(acme.id, "smsc").await.unwrap());
        assert!(store.account_senders(acme.id).await.unwrap().is_empty());
        let missing = store.set_account_sender(other.id + 100, "smsc", &sender, now).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    }
}
