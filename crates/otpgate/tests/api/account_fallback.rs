//! An account's default fallback call: set with the admin API (or the
//! command line, in `cli.rs`), applied by the accepting transaction to the
//! account's text sends that do not give `fallback_channel`, with the call's
//! phone credit reserved as for a send's own fallback; on both stores, and
//! across two nodes on one PostgreSQL database.

use serde_json::{Value, json};

use otp_store::FallbackState;

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::users::{ADMIN_TOKEN, configure};

const SECOND: i64 = 1_000_000;

/// Status and body of an admin call with `token` (GET without a body, PUT
/// with `body`).
async fn admin_as(
    app: &TestApp,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = app.url(path);
    let mut request = match method {
        "GET" => app.client.get(url),
        _ => app.client.put(url).json(&body.unwrap_or(json!({}))),
    };
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get_default(app: &TestApp, account: i64) -> (u16, Value) {
    let path = format!("/admin/v1/accounts/{account}/fallback/");
    admin_as(app, Some(ADMIN_TOKEN), "GET", &path, None).await
}

async fn put_default(app: &TestApp, account: i64, body: Value) -> (u16, Value) {
    let path = format!("/admin/v1/accounts/{account}/fallback/");
    admin_as(app, Some(ADMIN_TOKEN), "PUT", &path, Some(body)).await
}

/// A text send to a number of its own (a second generated-code send to one
/// number would be a resend of the first), with `extra` fields.
fn text_to(n: u8, extra: Value) -> Value {
    let mut body = json!({
        "number": format!("98510232{:02}", n),
        "message": "Your code is {otp}",
        "sms_send_options": "text",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Sends `body` with `key`, asserting a 200; the reply's details.
async fn sent(app: &TestApp, key: &str, body: &Value) -> Value {
    let r = app.send_as(key, body).await;
    let status = r.status();
    let reply: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}: {reply}");
    reply["data"]["details"].clone()
}

/// The `fallback` object of an OTP's detail (`null`: none).
async fn detail_fallback(app: &TestApp, key: &str, id: i64) -> Value {
    let r = app
        .client
        .get(app.url(&format!("/api/v1/auths/otps/{id}/")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["data"]["fallback"].clone()
}

/// Seconds from the OTP's creation to its fallback call's due time, as
/// stored, and the phone credits reserved for it.
async fn stored_call(app: &TestApp, account: i64, id: i64) -> Option<(i64, &'static str, i64)> {
    let otp = app.store.otp(account, id).await.unwrap().unwrap();
    otp.fallback.map(|f| {
        assert_eq!(f.state, FallbackState::Pending);
        (
            (f.due_at - otp.created_at) / SECOND,
            f.voice.as_str(),
            f.credits,
        )
    })
}

async fn phone_credits(app: &TestApp, account: i64) -> i64 {
    app.store
        .account(account)
        .await
        .unwrap()
        .unwrap()
        .phone_credits
}

for_each_backend! {
    config: configure;

    async fn a_text_send_without_fallback_fields_gets_the_accounts_default(app) {
        let (account, key) = app.new_account("shop", 100, 100).await;
        let (status, body) = get_default(&app, account).await;
        assert_eq!((status, &body["data"]), (200, &json!({"fallback_channel": "none"})), "{body}");

        let default = json!({"fallback_channel": "voice", "fallback_after_seconds": 45,
                             "fallback_voice_input": "np_rija"});
        let (status, body) = put_default(&app, account, default.clone()).await;
        assert_eq!((status, &body["data"]), (200, &default), "{body}");
        assert_eq!(get_default(&app, account).await.1["data"], default);
        let (_, detail) = admin_as(&app, Some(ADMIN_TOKEN), "GET",
            &format!("/admin/v1/accounts/{account}/"), None).await;
        assert_eq!(detail["data"]["fallback"], default, "the account detail shows it: {detail}");

        // No fallback field: the default, its phone credit reserved.
        let details = sent(&app, &key, &text_to(10, json!({}))).await;
        let id = details["id"].as_i64().unwrap();
        assert_eq!(details["fallback"]["voice_input"], "np_rija", "{details}");
        assert_eq!(details["fallback"]["reserved_phone_credits"], 1, "{details}");
        assert_eq!(details["remaining_phone_credits"], 99, "{details}");
        let shown = detail_fallback(&app, &key, id).await;
        assert_eq!((&shown["state"], &shown["channel"]), (&json!("pending"), &json!("voice")), "{shown}");
        assert_eq!(stored_call(&app, account, id).await, Some((45, "np_rija", 1)));
        assert_eq!(phone_credits(&app, account).await, 99);

        // "none" opts out: no call, nothing reserved.
        let details = sent(&app, &key, &text_to(11, json!({"fallback_channel": "none"}))).await;
        let id = details["id"].as_i64().unwrap();
        assert!(details.get("fallback").is_none(), "{details}");
        assert_eq!(detail_fallback(&app, &key, id).await, Value::Null);
        assert_eq!(phone_credits(&app, account).await, 99);

        // An explicit call uses the send's own fields, its wait over the default's.
        let own = json!({"fallback_channel": "voice", "fallback_after_seconds": 20,
                         "fallback_voice_input": "np_binod"});
        let id = sent(&app, &key, &text_to(12, own)).await["id"].as_i64().unwrap();
        assert_eq!(stored_call(&app, account, id).await, Some((20, "np_binod", 1)));
        let own_wait = json!({"fallback_channel": "voice", "fallback_voice_input": "np_rija"});
        let id = sent(&app, &key, &text_to(13, own_wait)).await["id"].as_i64().unwrap();
        assert_eq!(
            stored_call(&app, account, id).await,
            Some((60, "np_rija", 1)),
            "an explicit call without a wait takes 60 seconds, not the default's"
        );
        assert_eq!(phone_credits(&app, account).await, 97);

        // A voice send is untouched: it pays its own call only.
        let voice = json!({"number": "9851023214", "message": "Your code is {otp}",
                           "sms_send_options": "voice", "voice_input": "np_rija"});
        let details = sent(&app, &key, &voice).await;
        assert!(details.get("fallback").is_none(), "{details}");
        let id = details["id"].as_i64().unwrap();
        assert_eq!(stored_call(&app, account, id).await, None);
        let voice_cost = details["credits_used"].as_i64().unwrap();
        assert_eq!(phone_credits(&app, account).await, 97 - voice_cost);

        // A personnel code a call cannot read gets no default, and no error;
        // one of digits gets it.
        let letters = json!({"otp_options": "personnel", "otp": "AB12CD"});
        let id = sent(&app, &key, &text_to(15, letters)).await["id"].as_i64().unwrap();
        assert_eq!(stored_call(&app, account, id).await, None);
        let digits = json!({"otp_options": "personnel", "otp": "123456"});
        let id = sent(&app, &key, &text_to(16, digits)).await["id"].as_i64().unwrap();
        assert_eq!(stored_call(&app, account, id).await, Some((45, "np_rija", 1)));

        // Cleared: sends get no call again.
        let (status, body) = put_default(&app, account, json!({"fallback_channel": "none"})).await;
        assert_eq!((status, &body["data"]), (200, &json!({"fallback_channel": "none"})), "{body}");
        let (_, detail) = admin_as(&app, Some(ADMIN_TOKEN), "GET",
            &format!("/admin/v1/accounts/{account}/"), None).await;
        assert!(detail["data"].get("fallback").is_none(), "{detail}");
        let id = sent(&app, &key, &text_to(17, json!({}))).await["id"].as_i64().unwrap();
        assert_eq!(stored_call(&app, account, id).await, None);
        // The other account never had a default.
        let id = sent(&app, &app.key, &text_to(18, json!({}))).await["id"].as_i64().unwrap();
        assert_eq!(stored_call(&app, app.account_id, id).await, None);
        app.stop().await;
    }

    async fn a_send_that_cannot_pay_for_the_default_call_is_refused_and_writes_nothing(app) {
        let (account, key) = app.new_account("no-phone", 10, 0).await;
        let default = json!({"fallback_channel": "voice", "fallback_voice_input": "np_rija"});
        assert_eq!(put_default(&app, account, default).await.0, 200);
        let r = app.send_as(&key, &text_to(10, json!({}))).await;
        assert_eq!(r.status(), 402);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["errors"][0]["code"], "insufficient_credits", "{reply}");
        assert!(reply["message"].as_str().unwrap().contains("phone credits: this OTP needs 1"), "{reply}");
        let a = app.store.account(account).await.unwrap().unwrap();
        assert_eq!((a.sms_credits, a.phone_credits, a.otp_count), (10, 0, 0), "nothing written");
        // Opting out, the same account sends.
        sent(&app, &key, &text_to(11, json!({"fallback_channel": "none"}))).await;
        app.stop().await;
    }

    async fn bad_default_fallback_input_is_400_naming_the_field_and_changes_nothing(app) {
        let (account, _) = app.new_account("shop", 10, 10).await;
        let default = json!({"fallback_channel": "voice", "fallback_after_seconds": 45,
                             "fallback_voice_input": "np_shreegya"});
        assert_eq!(put_default(&app, account, default.clone()).await.0, 200);
        let mut cases = crate::fallback::bad_call_fields();
        cases.extend([
            (json!({}), "fallback_channel", "required"),
            (json!({"fallback_channel": true}), "fallback_channel", "invalid_type"),
            (
                json!({"fallback_channel": "voice", "fallback_voice_input": "np_rija",
                       "fallback_after_seconds": "soon"}),
                "fallback_after_seconds",
                "invalid_type",
            ),
            (
                json!({"fallback_channel": "voice", "fallback_voice_input": "np_rija",
                       "fallback_after_seconds": 4.5}),
                "fallback_after_seconds",
                "invalid_type",
            ),
            (
                json!({"fallback_channel": "voice", "fallback_voice_input": ["np_rija"]}),
                "fallback_voice_input",
                "invalid_type",
            ),
            (
                json!({"fallback_channel": "none", "fallback_after_seconds": 30}),
                "fallback_after_seconds",
                "not_allowed",
            ),
            (
                json!({"fallback_after_seconds": 30, "fallback_voice_input": "np_rija"}),
                "fallback_channel",
                "required",
            ),
        ]);
        for (body, field, code) in cases {
            let (status, reply) = put_default(&app, account, body.clone()).await;
            assert_eq!(status, 400, "{body}: {reply}");
            assert_eq!(reply["success"], false, "{reply}");
            assert!(
                crate::helpers::named_errors(&reply).contains(&(field, code)),
                "{body}: {reply}"
            );
            assert_eq!(get_default(&app, account).await.1["data"], default, "{body} changed it");
        }
        // A body that is not JSON gets the same envelope.
        let r = app
            .client
            .put(app.url(&format!("/admin/v1/accounts/{account}/fallback/")))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body("{\"fallback_channel\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["success"], false);
        assert_eq!(get_default(&app, account).await.1["data"], default);

        // No such account.
        for path in ["/admin/v1/accounts/99999/fallback/", "/admin/v1/accounts/shop/fallback/"] {
            let (status, _) = admin_as(&app, Some(ADMIN_TOKEN), "GET", path, None).await;
            assert_eq!(status, 404, "{path}");
            let (status, _) = admin_as(&app, Some(ADMIN_TOKEN), "PUT", path,
                Some(json!({"fallback_channel": "none"}))).await;
            assert_eq!(status, 404, "{path}");
        }
        // Not the operator: no token, a wrong one, an API key of the account.
        let path = format!("/admin/v1/accounts/{account}/fallback/");
        for token in [None, Some("not-the-admin-token"), Some(app.key.as_str())] {
            for method in ["GET", "PUT"] {
                let (status, reply) = admin_as(&app, token, method, &path,
                    Some(json!({"fallback_channel": "none"}))).await;
                assert_eq!(status, 401, "{method} with {token:?}: {reply}");
            }
        }
        assert_eq!(get_default(&app, account).await.1["data"], default);
        app.stop().await;
    }
}

/// A default set through one node is used by the next send on another node
/// sharing its PostgreSQL database, and so is clearing it: the accepting
/// transaction reads it from the account row, no node keeps a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_set_on_one_node_is_used_by_the_other_at_once() {
    let mut config = None;
    let app = spawn_app_with(Backend::Postgres, |c| {
        configure(c);
        config = Some(c.clone());
    })
    .await;
    let second = crate::helpers::Node::start(config.expect("the tweak ran")).await;
    let second_url = second.url.clone();
    let (account, key) = app.new_account("shop", 10, 10).await;
    let send_on_second = |n: u8| {
        let body = text_to(n, json!({}));
        let request = app
            .client
            .post(format!("{second_url}/api/v1/auths/send/otp/"))
            .bearer_auth(&key)
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()["data"]["details"]["id"]
                .as_i64()
                .unwrap()
        }
    };
    let id = send_on_second(10).await;
    assert_eq!(stored_call(&app, account, id).await, None, "no default yet");

    let default = json!({"fallback_channel": "voice", "fallback_after_seconds": 30,
                         "fallback_voice_input": "np_prashanna"});
    assert_eq!(put_default(&app, account, default).await.0, 200);
    let id = send_on_second(11).await;
    assert_eq!(
        stored_call(&app, account, id).await,
        Some((30, "np_prashanna", 1))
    );
    assert_eq!(phone_credits(&app, account).await, 9);

    assert_eq!(
        put_default(&app, account, json!({"fallback_channel": "none"}))
            .await
            .0,
        200
    );
    let id = send_on_second(12).await;
    assert_eq!(
        stored_call(&app, account, id).await,
        None,
        "cleared at once"
    );
    second.stop().await;
    app.stop().await;
}
