//! Fixtures for tests of the store and of the service that uses it: the
//! sample send and a fresh database on the tests' PostgreSQL server.
//!
//! Built for this crate's own tests and, with the `test-support` feature, for
//! other crates' tests (otpgate takes it as a dev-dependency); a release
//! build has none of it.

use otp_domain::channel::{Channel, OtpOption};
use otp_domain::code::OtpCode;
use otp_domain::credits::Cost;
use otp_domain::message::MessageTemplate;
use otp_domain::phone::PhoneNumber;

use crate::{AccountId, Claim, Micros, NewOtp, OtpStatus, Receipt, VerifyRequest, now_micros};

/// The code [`sample_otp`] sends.
pub const SAMPLE_CODE: &str = "482193";

/// The number [`sample_otp`] sends to, in its display form.
pub const SAMPLE_NUMBER: &str = "9851023212";

/// A personnel code [`SAMPLE_CODE`] by SMS (`Code {otp}`, one part, one SMS
/// credit) to [`SAMPLE_NUMBER`], sent now under no API key and verifiable for
/// ten minutes, counting against no spend day. A test changes what it needs
/// with `NewOtp { number, ..sample_otp(account) }`.
pub fn sample_otp(account_id: AccountId) -> NewOtp {
    // Parsed before the clock is read: the first parse loads the numbering
    // metadata, which takes a while in a debug build, and a send is stamped
    // when it is made, not before.
    let number = PhoneNumber::parse(SAMPLE_NUMBER).expect("a valid number");
    let now = now_micros();
    NewOtp {
        account_id,
        api_key_id: None,
        number,
        template: MessageTemplate::parse("Code {otp}").expect("a valid template"),
        otp: OtpCode::personnel(SAMPLE_CODE, Channel::Text).expect("a valid code"),
        otp_option: OtpOption::Personnel,
        channel: Channel::Text,
        voice: None,
        length_factor: None,
        company_name: None,
        segments: 1,
        cost: Cost { sms: 1, phone: 0 },
        created_at: now,
        expires_at: now + 600_000_000,
        spend_day: 0,
        spend_day_ends: i64::MAX,
        resend_of: None,
        fallback: crate::fallback::SendFallback::None,
    }
}

/// A claim of up to ten text jobs by `node-a` at `now`, leased for 30 s.
pub fn text_claim(now: Micros) -> Claim {
    Claim {
        node: "node-a".into(),
        channel: Channel::Text,
        limit: 10,
        now,
        lease_until: now + 30_000_000,
    }
}

/// A `DELIVRD` receipt for carrier message `id` on `route`, received `at`.
pub fn delivered_receipt(route: &str, id: &str, at: Micros) -> Receipt {
    Receipt {
        route: route.into(),
        message_ids: vec![id.into()],
        status: Some(OtpStatus::Delivered),
        state: "DELIVRD".into(),
        error_code: None,
        at,
    }
}

/// The right code, [`SAMPLE_CODE`], for OTP `otp_id` of `account_id` at
/// `now`, three attempts allowed.
pub fn verify_sample(account_id: AccountId, otp_id: i64, now: Micros) -> VerifyRequest {
    VerifyRequest {
        account_id,
        phone_number: None,
        otp_id: Some(otp_id),
        api_key_id: None,
        code: SAMPLE_CODE.into(),
        max_attempts: 3,
        now,
    }
}

/// Where the PostgreSQL server for tests is: `OTPGATE_TEST_PG_URL`, or the
/// local one `scripts/test.sh` starts. A test that cannot reach it fails, it
/// never skips.
pub fn pg_admin_url() -> String {
    std::env::var("OTPGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates an empty database on the tests' server and returns its URL.
/// Panics, saying how to start the server, when it cannot be reached.
pub async fn fresh_pg_database() -> String {
    let admin = pg_admin_url();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL for the tests is not reachable at {admin}: {e}. \
                 Run scripts/test.sh (it starts it) or set OTPGATE_TEST_PG_URL."
            )
        });
    tokio::spawn(conn);
    let name = format!("otpgate_t_{}", unique_name());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a test database");
    let (server, _) = admin
        .rsplit_once('/')
        .expect("OTPGATE_TEST_PG_URL must end with /DATABASE");
    format!("{server}/{name}")
}

/// A name no other test of any process takes: the process id, the time and
/// a counter (letters, digits and `_`, fit for a database name).
pub fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        now_micros(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
