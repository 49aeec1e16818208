//! The HTTP edge against hostile clients: metric labels that no request can
//! multiply, request ids that cannot forge a log line, connection caps (global
//! and per client address), the whole-request timeout, trusted proxies, the
//! admin listener and the base of `next` links. Raw TCP where reqwest would not
//! send the abuse, and client sockets bound to other loopback addresses
//! (127.0.0.2, ...) to act as other clients.

use std::collections::BTreeMap;

use rand::Rng;
use reqwest::Method;

use crate::both_backends;
use crate::helpers::TestApp;

/// The series in a `/metrics` scrape: every line but comments, by name and labels.
async fn metric_series(app: &TestApp) -> BTreeMap<String, f64> {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| (b'A' + rng.random_range(0..26u8)) as char)
        .collect()
}

both_backends! {
    async fn junk_methods_and_random_paths_add_no_metric_series(app) {
        let request = |method: &str, path: &str| {
            app.client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), app.url(path))
                .send()
        };
        // Every kind of request below once, so each series it touches exists.
        request("JUNK", "/healthz").await.unwrap();
        request("JUNK", "/nowhere").await.unwrap();
        request("GET", "/nowhere").await.unwrap();
        request("GET", "/api/v1/auths/otps/1/").await.unwrap();
        metric_series(&app).await;
        let before = metric_series(&app).await;

        let n = 200;
        for i in 0..n {
            // Up to 4 KB: a method token is bounded only by the header limit.
            let method = random_token(1 + (i * 37) % 4096);
            assert_eq!(request(&method, "/healthz").await.unwrap().status(), 405);
            let path = format!("/{}/{}", random_token(12), random_token(40));
            assert_eq!(request("GET", &path).await.unwrap().status(), 404);
            let path = format!("/api/v1/auths/otps/{}/", random_token(8));
            assert_eq!(request("GET", &path).await.unwrap().status(), 401);
        }
        let after = metric_series(&app).await;

        let names = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&before), names(&after), "the set of series changed");
        let other = "otpgate_http_requests_total{route=\"/healthz\",method=\"other\",status=\"405\"}";
        assert_eq!(after[other] - before[other], n as f64, "junk methods are counted as other");
        let unmatched = "otpgate_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}";
        assert_eq!(after[unmatched] - before[unmatched], n as f64);
        let template = "otpgate_http_requests_total{route=\"/api/v1/auths/otps/{id}/\",method=\"GET\",status=\"401\"}";
        assert_eq!(after[template] - before[template], n as f64);
    }

    async fn an_unsafe_request_id_is_replaced_by_a_generated_one(app) {
        let kept = app.client.get(app.url("/healthz")).header("x-request-id", "node-7:req_42.a").send().await.unwrap();
        assert_eq!(kept.headers()["x-request-id"], "node-7:req_42.a");
        let longest = "a".repeat(64);
        let kept = app.client.get(app.url("/healthz")).header("x-request-id", &longest).send().await.unwrap();
        assert_eq!(kept.headers()["x-request-id"], longest.as_str());

        let forged = [
            "x\" level=ERROR msg=\"key accepted".to_owned(),
            "a b".to_owned(),
            "b".repeat(65),
            "id;drop".to_owned(),
        ];
        for id in &forged {
            let r = app.client.get(app.url("/healthz")).header("x-request-id", id).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let got = r.headers()["x-request-id"].to_str().unwrap();
            assert!(got.len() == 32 && got.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?} -> {got:?}");
        }
        let two = app.client.get(app.url("/healthz"))
            .header("x-request-id", "one")
            .header("x-request-id", "two")
            .send().await.unwrap();
        let got: Vec<_> = two.headers().get_all("x-request-id").iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 32, "{got:?}");
    }
}
