use serde_json::Value;

use crate::for_each_backend;
use crate::helpers::text_send;

for_each_backend! {
    async fn health_and_readiness_answer(app) {
        let r = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "ready");
        let expected = match app.backend { crate::helpers::Backend::Sqlite => "sqlite", crate::helpers::Backend::Postgres => "postgres" };
        assert_eq!(body["store"], expected);
    }

    async fn metrics_count_requests_sends_and_queue_depth(app) {
        app.send_ok(&text_send("9851023212")).await;
        assert_eq!(app.send(&serde_json::json!({})).await.status(), 400);
        let text = app.metrics_text().await;
        assert!(text.contains("otpgate_sends_total{channel=\"text\",outcome=\"accepted\"} 1"), "{text}");
        assert!(text.contains("otpgate_sends_total{channel=\"unknown\",outcome=\"invalid\"} 1"), "{text}");
        assert!(text.contains("otpgate_http_requests_total{route=\"/api/v1/auths/send/otp/\",method=\"POST\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("otpgate_http_request_duration_seconds_bucket"), "{text}");
        assert!(text.contains("otpgate_accept_duration_seconds_count 1"), "{text}");
        assert!(text.contains("otpgate_queue_depth{channel=\"text\"}"), "{text}");
        assert!(text.contains("# TYPE otpgate_queue_depth gauge"));
    }

    async fn the_openapi_document_describes_the_api(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
        for path in ["/api/v1/auths/send/otp/", "/api/v1/auths/list/send-otps/", "/api/v1/auths/otps/{id}/"] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["components"]["schemas"].get("SendOtpRequest").is_some());
        assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
        let page = app.client.get(app.url("/docs")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("/openapi.json"));
        assert!(!html.contains("http://") && !html.contains("https://"), "the docs page must work offline");
    }

    async fn unknown_paths_and_methods_get_the_envelope(app) {
        let r = app.client.get(app.url("/api/v1/nothing/")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], 404);
        assert_eq!(body["success"], false);
        let r = app.client.get(app.url("/api/v1/auths/send/otp/")).bearer_auth(&app.key).send().await.unwrap();
        assert_eq!(r.status(), 405);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], 405);
        assert_eq!(body["success"], false);
    }

    async fn a_request_id_comes_back(app) {
        let r = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
        assert_eq!(r.headers()["x-request-id"], "abc-123");
        // Made up when missing: 32 hex digits, a new one for each request.
        let mut ids = Vec::new();
        for _ in 0..2 {
            let r = app.client.get(app.url("/healthz")).send().await.unwrap();
            let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            ids.push(id);
        }
        assert_ne!(ids[0], ids[1]);
    }
}
