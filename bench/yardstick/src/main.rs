//! The yardstick of `bench/api.sh`: what HTTP and JSON alone cost on this
//! machine. It answers `POST /api/v1/auths/send/otp/` the way otpgate's send
//! is shaped, without the work in between: it requires a Bearer header,
//! parses the same JSON body into a map of fields as otpgate does, renders the message with a
//! fixed code and answers an envelope of the same size and shape. No store,
//! no validation, no delivery: the ratio of otpgate's rate to this one, both
//! measured by the same load generator in the same run, is the share of the
//! machine's HTTP capacity that durable sends reach.
//!
//! Usage: `yardstick [ADDRESS]` (default `127.0.0.1:18081`).

use std::sync::atomic::{AtomicI64, Ordering};

use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Serialize)]
struct Details {
    number: String,
    otp_options: String,
    message: String,
    otp: &'static str,
    sms_send_options: String,
    credits_used: i64,
    remaining_sms_credits: i64,
    remaining_phone_credits: i64,
    id: i64,
    status: &'static str,
    segments: u32,
    encoding: &'static str,
    company_name: Option<String>,
    expires_at: &'static str,
    resend_of: Option<i64>,
}

#[derive(Serialize)]
struct Envelope {
    success: bool,
    message: &'static str,
    data: Data,
}

#[derive(Serialize)]
struct Data {
    details: Details,
}

static NEXT_ID: AtomicI64 = AtomicI64::new(1);

/// A field of the body as text (otpgate reads numbers given as text too).
fn text(body: &Map<String, Value>, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

async fn send(
    headers: HeaderMap,
    Json(body): Json<Map<String, Value>>,
) -> Result<Json<Envelope>, StatusCode> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    let (Some(number), Some(message), Some(channel), true) = (
        text(&body, "number"),
        text(&body, "message"),
        text(&body, "sms_send_options"),
        bearer,
    ) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let code = "123456";
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Ok(Json(Envelope {
        success: true,
        message: "OTP Sent Successfully.",
        data: Data {
            details: Details {
                number,
                otp_options: text(&body, "otp_options").unwrap_or_else(|| "generated".into()),
                message: message.replace("{otp}", code),
                otp: code,
                sms_send_options: channel,
                credits_used: 1,
                remaining_sms_credits: 100_000_000 - id,
                remaining_phone_credits: 0,
                id,
                status: "queued",
                segments: 1,
                encoding: "gsm7",
                company_name: text(&body, "company_name"),
                expires_at: "2026-01-01T00:10:00+05:45",
                resend_of: None,
            },
        },
    }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let app = Router::new().route("/api/v1/auths/send/otp/", post(send));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
