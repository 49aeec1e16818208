//! What the client conformance tests share (`pypi_client.rs`, `php_client.rs`,
//! `dotnet_client.rs`): the two modes a client is run against, each on both
//! stores (the `modes:` form of `for_each_backend!`, with [`development`] and
//! [`production`] as the tweaks), and the account's user with the API key a
//! client is configured with.
//!
//! Development mode is full compatibility. Production mode differs from it only
//! where docs/compatibility.md says so (list codes masked, `get-api-keys` masked,
//! cookies `Secure`); a test states each difference where it meets one and
//! asserts everything else the same.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use otpgate::config::{Config, LimitsConfig, Mode, Secret};
use serde_json::Value;

use crate::helpers::TestApp;
use crate::users::{PASSWORD, add_user, call, configure, tokens_of};

/// The account's user, as the tests log in.
pub const EMAIL: &str = "ana@example.com";

/// Development mode with the default limits a client meets (the suite's other
/// tests turn them off).
pub fn development(c: &mut Config) {
    configure(c);
    c.limits = LimitsConfig::default();
}

/// Production mode with every production default: the keys it refuses to start
/// without are set, nothing else is.
pub fn production(c: &mut Config) {
    development(c);
    c.mode = Mode::Production;
    c.secrets.hmac_key = Some(Secret::new(BASE64.encode([1u8; 32])));
    c.secrets.encryption_keys = [("k1".to_owned(), Secret::new(BASE64.encode([2u8; 32])))].into();
    c.secrets.current_key_id = "k1".into();
    c.demo.create_default_account = None;
}

/// Whether list replies show codes in `mode` (the one list difference).
pub fn codes_shown(mode: Mode) -> bool {
    mode == Mode::Development
}

/// The account's user, logged in, with the key it generated as TingTing's
/// dashboard does: (user id, access token, refresh token, API key).
pub struct User {
    pub id: i64,
    pub access: String,
    pub refresh: String,
    pub key: String,
}

pub async fn user_with_key(app: &TestApp) -> User {
    let id = add_user(app, app.account_id, EMAIL, PASSWORD).await;
    let (access, refresh) = tokens_of(app, EMAIL, PASSWORD).await;
    let (status, made) = call(
        app,
        "POST",
        "/api/v1/auths/generate-api-keys/",
        Some(&access),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let key = made["token"].as_str().unwrap().to_owned();
    User {
        id,
        access,
        refresh,
        key,
    }
}

/// A time as TingTing writes it: RFC 3339 with Kathmandu's offset.
pub fn assert_kathmandu_time(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(text).is_ok() && text.ends_with("+05:45"),
        "{text}"
    );
}
