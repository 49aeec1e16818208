use serde_json::Value;

use crate::for_each_backend;
use crate::helpers::text_send;

for_each_backend! {
    async fn two_hundred_simultaneous_sends_against_a_hundred_credits_accept_exactly_a_hundred(app) {
        let (account, key) = app.new_account("contended", 100, 0).await;
        let sends: Vec<_> = (0..200).map(|i| {
            let client = app.client.clone();
            let url = app.url("/api/v1/auths/send/otp/");
            let key = key.clone();
            tokio::spawn(async move {
                let number = format!("98510{:05}", i);
                let r = client.post(url).bearer_auth(key).json(&text_send(&number)).send().await.unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                (status, body)
            })
        }).collect();
        let mut ok = 0;
        let mut refused = 0;
        let mut remaining = Vec::new();
        for s in sends {
            let (status, body) = s.await.unwrap();
            match status {
                200 => { ok += 1; remaining.push(body["data"]["details"]["remaining_sms_credits"].as_i64().unwrap()); }
                402 => refused += 1,
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!((ok, refused), (100, 100));
        remaining.sort_unstable();
        assert_eq!(remaining, (0..100).collect::<Vec<i64>>(), "each accepted send saw its own balance");
        let a = app.store.account(account).await.unwrap().unwrap();
        assert_eq!((a.sms_credits, a.otp_count), (0, 100));
        let ledger = app.store.ledger(account).await.unwrap();
        assert_eq!(ledger.iter().filter(|e| e.kind == "debit").count(), 100);
        let sum: i64 = ledger.iter().map(|e| e.sms_delta).sum();
        assert_eq!(sum, 0);
    }
}
