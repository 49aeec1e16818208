use std::collections::HashSet;

use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{TestApp, text_send};

async fn send_many(app: &TestApp, n: usize, number: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = app.send_ok(&text_send(number)).await;
        ids.push(r["data"]["details"]["id"].as_i64().unwrap());
    }
    ids
}

async fn get(app: &TestApp, url: &str) -> Value {
    let r = app
        .client
        .get(url)
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

fn ids_of(page: &Value) -> Vec<i64> {
    page["results"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

for_each_backend! {
    async fn the_list_has_the_seed_shape_newest_first(app) {
        let ids = send_many(&app, 3, "9851023212").await;
        let (status, page) = app.list("").await;
        assert_eq!(status, 200);
        assert_eq!(page["count"], 3);
        assert_eq!(page["total_pages"], 1);
        assert!(page["next"].is_null());
        assert!(page["previous"].is_null());
        assert_eq!(page["results"]["status"], 200);
        assert_eq!(page["results"]["success"], true);
        assert_eq!(page["results"]["errors"], json!([]));
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(ids_of(&page), newest_first);
        let item = &page["results"]["data"][0];
        for field in ["id", "phone_number", "message", "otp", "otp_options", "sms_send_options", "created_at", "status", "credits_used"] {
            assert!(item.get(field).is_some(), "missing {field}: {item}");
        }
        assert_eq!(item["phone_number"], "9851023212");
        let created = item["created_at"].as_str().unwrap();
        assert!(created.ends_with("+05:45"), "{created}");
        assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok());
        assert_eq!(item["message"], format!("Your code is {}", item["otp"].as_str().unwrap()));
    }

    async fn following_next_links_visits_every_record_once(app) {
        let ids = send_many(&app, 25, "9851023212").await;
        let (_, first) = app.list("?limit=10").await;
        assert_eq!(first["count"], 25);
        assert_eq!(first["total_pages"], 3);
        let next = first["next"].as_str().unwrap().to_owned();
        assert!(next.starts_with(&app.address), "{next}");
        assert!(next.contains("limit=10") && next.contains("offset=10"), "{next}");
        let mut seen: Vec<i64> = ids_of(&first);
        // New OTPs arriving between pages neither repeat nor hide old ones.
        send_many(&app, 3, "9851023212").await;
        let mut url = Some(next);
        let mut pages = 1;
        while let Some(u) = url {
            let page = get(&app, &u).await;
            seen.extend(ids_of(&page));
            if pages == 1 {
                let prev = page["previous"].as_str().unwrap();
                assert!(prev.contains("offset=0"), "{prev}");
            }
            url = page["next"].as_str().map(str::to_owned);
            pages += 1;
        }
        assert_eq!(pages, 3);
        let unique: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "a record was listed twice");
        assert_eq!(unique, ids.iter().copied().collect::<HashSet<_>>());
    }

    async fn page_and_page_size_work_and_links_keep_that_style(app) {
        send_many(&app, 5, "9851023212").await;
        let (_, p2) = app.list("?page=2&page_size=2").await;
        assert_eq!(p2["count"], 5);
        assert_eq!(p2["total_pages"], 3);
        assert_eq!(ids_of(&p2).len(), 2);
        let next = p2["next"].as_str().unwrap();
        assert!(next.contains("page=3") && next.contains("page_size=2"), "{next}");
        let prev = p2["previous"].as_str().unwrap();
        assert!(prev.contains("page=1"), "{prev}");
        let (_, deep) = app.list("?offset=4&limit=2").await;
        assert_eq!(ids_of(&deep).len(), 1);
        let (_, beyond) = app.list("?offset=50").await;
        assert_eq!(ids_of(&beyond).len(), 0);
        assert_eq!(beyond["count"], 5);
    }

    async fn filters_narrow_the_list_and_count(app) {
        send_many(&app, 3, "9851023212").await;
        send_many(&app, 2, "9801234567").await;
        let voice = json!({"number": "9801234567", "message": "{otp}", "sms_send_options": "voice", "voice_input": "np_rija"});
        app.send_ok(&voice).await;
        let (_, by_number) = app.list("?phone_number=9801234567").await;
        assert_eq!(by_number["count"], 3);
        let (_, intl) = app.list("?phone_number=%2B9779801234567").await;
        assert_eq!(intl["count"], 3);
        let (_, by_channel) = app.list("?sms_send_options=voice").await;
        assert_eq!(by_channel["count"], 1);
        assert_eq!(by_channel["results"]["data"][0]["voice_input"], "np_rija");
        let (_, both) = app.list("?phone_number=9801234567&sms_send_options=text&limit=1").await;
        assert_eq!(both["count"], 2);
        let next = both["next"].as_str().unwrap();
        assert!(next.contains("phone_number=9801234567") && next.contains("sms_send_options=text"), "{next}");
        assert!(next.contains("total=2"), "{next}");
        let last = get(&app, next).await;
        assert_eq!(last["count"], 2);
        assert_eq!(ids_of(&last).len(), 1);
        assert_ne!(ids_of(&last), ids_of(&both));
        let today = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Kathmandu).date_naive();
        let (_, today_list) = app.list(&format!("?created_at_after={today}&created_at_before={today}")).await;
        assert_eq!(today_list["count"], 6);
        let yesterday = today.pred_opt().unwrap();
        let (_, none) = app.list(&format!("?created_at_before={yesterday}")).await;
        assert_eq!(none["count"], 0);
        let tomorrow = today.succ_opt().unwrap();
        let (_, later) = app.list(&format!("?created_at_after={tomorrow}")).await;
        assert_eq!(later["count"], 0);
    }

    async fn invalid_list_parameters_are_400(app) {
        for q in ["?limit=0", "?limit=101", "?limit=ten", "?offset=-1", "?page=0", "?cursor=x",
                  "?sms_send_options=fax", "?phone_number=12", "?created_at_after=yesterday"] {
            let (status, body) = app.list(q).await;
            assert_eq!(status, 400, "{q}: {body}");
            assert_eq!(body["success"], false);
            assert!(!body["errors"].as_array().unwrap().is_empty());
        }
    }
}
