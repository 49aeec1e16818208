//! Conversion stats over HTTP: windowed aggregates per channel, route,
//! country and operator prefix, scoped to the caller's account, bad input
//! refused with the envelope, and the bounded `/metrics` counters.

use otp_store::{OtpStatus, Receipt, now_micros};
use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::TestApp;

const STATS: &str = "/api/v1/auths/stats/";

async fn stats_as(app: &TestApp, key: &str, query: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(&format!("{STATS}{query}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn personnel(number: &str, code: &str) -> Value {
    json!({
        "number": number,
        "message": "Your code is {otp}",
        "sms_send_options": "text",
        "otp_options": "personnel",
        "otp": code,
    })
}

fn group<'a>(body: &'a Value, key: &str) -> &'a Value {
    body["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key} in {body}"))
}

/// Sends to NTC (984) and Ncell (980), delivers the first, verifies it.
async fn traffic(app: &TestApp) {
    let ntc = app.send_ok(&personnel("9841234567", "482193")).await["data"]["details"]["id"]
        .as_i64()
        .unwrap();
    let ncell = app.send_ok(&personnel("9801234567", "771166")).await["data"]["details"]["id"]
        .as_i64()
        .unwrap();
    app.wait_for_status(ntc, "sent").await;
    app.wait_for_status(ncell, "sent").await;
    let (_, ids) = app.store.otp_history(ntc).await.unwrap();
    let matched = app
        .store
        .record_receipts(vec![Receipt {
            route: String::new(),
            message_ids: ids,
            status: Some(OtpStatus::Delivered),
            state: "DELIVRD".into(),
            error_code: None,
            at: now_micros(),
        }])
        .await
        .unwrap();
    assert_eq!(matched, vec![Some(ntc)]);
    let r = app
        .client
        .post(app.url("/api/v1/auths/verify/otp/"))
        .bearer_auth(&app.key)
        .json(&json!({"number": "9841234567", "otp": "482193"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

for_each_backend! {
    async fn stats_count_sends_deliveries_and_verifications_per_operator_prefix(app) {
        traffic(&app).await;
        let (status, body) = stats_as(&app, &app.key, "?window=hour&group_by=prefix").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["data"]["window"].as_str(), body["data"]["group_by"].as_str()), (Some("hour"), Some("prefix")));
        let ntc = group(&body, "+977984");
        assert_eq!((ntc["sent"].as_i64(), ntc["submitted"].as_i64(), ntc["delivered"].as_i64(), ntc["verified"].as_i64()),
            (Some(1), Some(1), Some(1), Some(1)));
        assert_eq!((ntc["delivery_rate"].as_f64(), ntc["verification_rate"].as_f64()), (Some(1.0), Some(1.0)));
        assert!(ntc["median_delivery_ms"].as_i64().is_some(), "{ntc}");
        assert!(ntc["median_verify_ms"].as_i64().is_some(), "{ntc}");
        let ncell = group(&body, "+977980");
        assert_eq!((ncell["sent"].as_i64(), ncell["verified"].as_i64()), (Some(1), Some(0)));
        assert_eq!(ncell["verification_rate"].as_f64(), Some(0.0));
        assert!(ncell["median_verify_ms"].is_null());

        // The defaults: the last day, by channel.
        let (_, by_channel) = stats_as(&app, &app.key, "").await;
        assert_eq!(by_channel["data"]["window"], "day");
        let text = group(&by_channel, "text");
        assert_eq!((text["sent"].as_i64(), text["verified"].as_i64()), (Some(2), Some(1)));
        let (_, by_country) = stats_as(&app, &app.key, "?group_by=country&window=week").await;
        assert_eq!(group(&by_country, "977")["sent"].as_i64(), Some(2));
    }

    async fn stats_show_only_the_callers_account(app) {
        traffic(&app).await;
        let (_, other_key) = app.new_account("other", 5, 0).await;
        let (status, body) = stats_as(&app, &other_key, "?group_by=route").await;
        assert_eq!(status, 200);
        assert_eq!(body["data"]["groups"], json!([]));
    }

    async fn a_bad_window_or_grouping_gets_the_envelope_naming_each_field(app) {
        for (query, fields) in [
            ("?window=month", vec!["window"]),
            ("?group_by=account", vec!["group_by"]),
            ("?window=1&group_by=number", vec!["window", "group_by"]),
        ] {
            let (status, body) = stats_as(&app, &app.key, query).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert_eq!(body["success"], false);
            let named: Vec<&str> = body["errors"].as_array().unwrap().iter()
                .map(|e| e["field"].as_str().unwrap()).collect();
            assert_eq!(named, fields, "{query}");
            assert_eq!(body["errors"][0]["code"], "invalid_choice");
        }
        let r = app.client.get(app.url(STATS)).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
}

for_each_backend! {
    config: |c| c.limits.allowed_countries = Vec::new();

    async fn metrics_count_conversions_by_route_channel_and_a_fixed_country_list(app) {
        traffic(&app).await;
        // A number outside the fixed list of countries is labelled `other`.
        app.send_ok(&personnel("+4915123456789", "123456")).await;
        let text = app.metrics_text().await;
        let line = |l: &str| text.lines().any(|x| x == l);
        assert!(line("otpgate_conversions_total{route=\"none\",channel=\"text\",country=\"NP\",outcome=\"sent\"} 2"), "{text}");
        assert!(line("otpgate_conversions_total{route=\"none\",channel=\"text\",country=\"other\",outcome=\"sent\"} 1"), "{text}");
        assert!(text.lines().any(|x| x.starts_with("otpgate_conversions_total{") && x.contains("country=\"NP\",outcome=\"verified\"} 1")), "{text}");
        assert!(text.contains("# TYPE otpgate_conversion_seconds_total counter"));
        assert!(!text.contains("+977"), "no number or prefix is a label");
    }
}
