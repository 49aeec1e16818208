//! Operational endpoints: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and
//! the offline `/docs` page.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::admin::AdminTokenAuth;
use super::keys::ScopesDoc;
use super::users::AccessTokenAuth;
use crate::metrics::labels;
use crate::state::AppState;

/// `/healthz` alone: served on every listener.
pub fn health_router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

/// Every operational endpoint, `/healthz` included.
pub fn router() -> Router<AppState> {
    health_router()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/docs", get(docs))
        .route("/docs/", get(docs))
}

/// The OpenAPI document, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "otpgate",
        description = "Self-hosted OTP gateway, compatible with the TingTing OTP API."
    ),
    paths(
        super::send::send_otp,
        super::list::list_otps,
        super::list::get_otp,
        super::stats::stats,
        super::verify::verify_otp,
        super::voice::list_voices,
        super::webhooks::get_webhook,
        super::webhooks::set_webhook,
        super::webhooks::delete_webhook,
        super::webhooks::list_deliveries,
        super::voice::preview,
        super::users::login,
        super::users::refresh,
        super::users::user_detail,
        super::users::generate_api_key,
        super::users::get_api_key,
        super::users::list_sessions,
        super::users::logout,
        super::admin::list_accounts,
        super::admin::create_account,
        super::admin::get_account,
        super::admin::add_credits,
        super::admin::disable_account,
        super::admin::enable_account,
        super::admin::list_keys,
        super::admin::create_key,
        super::admin::revoke_key,
        super::admin::list_users,
        super::admin::create_user,
        super::admin::set_password,
        super::admin::list_routes,
        super::admin::pause_route,
        super::admin::drain_route,
        super::admin::resume_route,
        super::account_rules::list_templates,
        super::account_rules::replace_templates,
        super::account_rules::clear_templates,
        super::account_rules::list_senders,
        super::account_rules::set_sender,
        super::account_rules::remove_sender,
        super::account_fallback::get_fallback,
        super::account_fallback::set_fallback,
        super::guard::list_holds,
        super::guard::release_hold,
        super::receipts::list_unmatched,
        super::keys::list_keys,
        super::keys::create_key,
        super::keys::revoke_key
    ),
    components(schemas(
        super::error::ErrorEnvelope,
        super::error::FieldError,
        super::webhooks::DeliveryItem,
        super::webhooks::AttemptItem
    )),
    modifiers(
        &BearerAuth,
        &AccessTokenAuth,
        &AdminTokenAuth,
        &BodyRefusals,
        &ScopesDoc,
        &EdgeRefusals
    ),
    tags(
        (name = "otp", description = "Send and list one-time passwords"),
        (name = "webhooks", description = "The account's webhook: its URL, its signing secret and the events sent to it"),
        (name = "voice", description = "Voices of voice OTPs and a preview of their prompts"),
        (name = "users", description = "Log in, and manage the account's API key as a user"),
        (name = "keys", description = "The account's API keys, with a key that has the `account` scope"),
        (name = "admin", description = "Accounts, credits, keys, users, approved templates, senders and default fallback calls, with the admin token")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer otpg_...`"))
                    .build(),
            ),
        );
    }
}

/// Every route with a body reads it through the same extractor, which refuses a
/// body over 64 KiB (413) and one that is neither JSON nor a form (415): both are
/// documented on every such operation here, once, rather than on each handler.
struct BodyRefusals;

impl Modify for BodyRefusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let refusal = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.post, &mut item.put, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                if operation.request_body.is_none() {
                    continue;
                }
                let responses = &mut operation.responses.responses;
                responses
                    .entry("413".to_owned())
                    .or_insert_with(|| refusal("Body over 64 KiB; nothing written").into());
                responses.entry("415".to_owned()).or_insert_with(|| {
                    refusal("Neither JSON nor a form body; nothing written").into()
                });
            }
        }
    }
}

/// The HTTP edge (`crate::server`) may answer any request itself: 429 when the
/// client's address holds all the connections it may, 503 when the server
/// does, and 408 when a body does not arrive in time. Documented on every
/// operation (408 on those with a body), without replacing a handler's own
/// description of the same status.
struct EdgeRefusals;

impl Modify for EdgeRefusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let refusal = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                responses.entry("429".to_owned()).or_insert_with(|| {
                    refusal("Too many connections from the client's address (client_connection_limit); nothing written").into()
                });
                responses.entry("503".to_owned()).or_insert_with(|| {
                    refusal("The server holds all the connections it may (connection_limit), or the store is unreachable; nothing written").into()
                });
                if has_body {
                    responses.entry("408".to_owned()).or_insert_with(|| {
                        refusal("The request did not all arrive within api.request_timeout_seconds (request_timeout); nothing written").into()
                    });
                }
            }
        }
    }
}

/// The process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: its store answers. Carrier connections are reported
/// too; one that is down makes the status `degraded` but not unready, because
/// sends are still accepted durably and wait for the carrier.
async fn readyz(State(state): State<AppState>) -> Response {
    let routes: Vec<_> = state.drivers.iter().flat_map(|(_, d)| d.health()).collect();
    match state.store.ping().await {
        Ok(()) => {
            let degraded = routes.iter().any(|r| !is_up(&r.status));
            Json(json!({
                "status": if degraded { "degraded" } else { "ready" },
                "store": state.store.backend(),
                "routes": routes,
            }))
            .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "store": state.store.backend() })),
            )
                .into_response()
        }
    }
}

/// A route that can take deliveries: an SMPP bind is `bound`; a SIP trunk, which
/// keeps no standing connection, is `ready`.
fn is_up(status: &str) -> bool {
    matches!(status, "bound" | "ready")
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut gauges = Vec::new();
    let mut depth = [("text", 0i64), ("voice", 0i64)];
    if let Ok(rows) = state.store.queue_depth().await {
        for (channel, n) in rows {
            if let Some(slot) = depth.iter_mut().find(|(c, _)| *c == channel) {
                slot.1 = n;
            }
        }
    }
    for (channel, n) in depth {
        gauges.push((
            "otpgate_queue_depth",
            labels(&[("channel", channel)]),
            n as f64,
        ));
    }
    for h in state.drivers.iter().flat_map(|(_, d)| d.health()) {
        let l = labels(&[("route", &h.route), ("connection", &h.connection)]);
        let up = if is_up(&h.status) { 1.0 } else { 0.0 };
        gauges.push(("otpgate_route_up", l.clone(), up));
        gauges.push(("otpgate_route_in_flight", l, h.in_flight as f64));
    }
    // Route names come from the configuration: a bounded set.
    for route in state.runtime.routes() {
        let l = labels(&[("route", &route.name)]);
        if let Some(rate) = route.delivery_rate {
            gauges.push(("otpgate_route_delivery_rate", l.clone(), rate));
        }
        let demoted = if route.demoted { 1.0 } else { 0.0 };
        gauges.push(("otpgate_route_demoted", l, demoted));
    }
    for (k, c) in state.store.live_totals() {
        for (outcome, n) in [
            ("sent", c.sent),
            ("submitted", c.submitted),
            ("delivered", c.delivered),
            ("failed", c.failed),
            ("verified", c.verified),
        ] {
            let l = labels(&[
                ("route", &k.route),
                ("channel", k.channel),
                ("country", k.country),
                ("outcome", outcome),
            ]);
            gauges.push(("otpgate_conversions_total", l, n as f64));
        }
        for (to, sum_ms) in [
            ("delivered", c.delivery.sum_ms),
            ("verified", c.verify.sum_ms),
        ] {
            let l = labels(&[
                ("route", &k.route),
                ("channel", k.channel),
                ("country", k.country),
                ("to", to),
            ]);
            gauges.push((
                "otpgate_conversion_seconds_total",
                l,
                sum_ms as f64 / 1000.0,
            ));
        }
    }
    for (scope, accounts, n) in state.guard.active_gauges() {
        gauges.push((
            "otpgate_guard_active_holds",
            labels(&[("scope", scope), ("accounts", accounts)]),
            n as f64,
        ));
    }
    gauges.push(crate::metrics::build_info());
    gauges.extend(crate::metrics::process_gauges());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges),
    )
        .into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A self-contained page that renders `/openapi.json`; no CDN, works offline.
async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
    use serde_json::Value;
    use utoipa::OpenApi;

    use super::ApiDoc;

    /// What a `Deserialize` asks for when it reads a struct: its field names.
    struct FieldNames<'a>(&'a mut &'static [&'static str]);

    /// Stops the read once the names are known.
    #[derive(Debug)]
    struct Stop;

    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not a struct")
        }
    }

    impl std::error::Error for Stop {}

    impl de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    impl<'de> Deserializer<'de> for FieldNames<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    /// The fields a handler reads from a body of type `R`.
    fn read_by<R: DeserializeOwned>() -> BTreeSet<&'static str> {
        let mut names: &'static [&'static str] = &[];
        let _ = R::deserialize(FieldNames(&mut names));
        names.iter().copied().collect()
    }

    /// Every request struct a handler reads its body into, by schema name.
    fn request_structs() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
        use super::super::{
            account_fallback, account_rules, admin, keys, send, users, verify, voice, webhooks,
        };
        BTreeMap::from([
            ("SendOtpRequest", read_by::<send::SendOtpRequest>()),
            ("VerifyOtpRequest", read_by::<verify::VerifyOtpRequest>()),
            ("PreviewRequest", read_by::<voice::PreviewRequest>()),
            (
                "SetWebhookRequest",
                read_by::<webhooks::SetWebhookRequest>(),
            ),
            ("LoginRequest", read_by::<users::LoginRequest>()),
            ("RefreshRequest", read_by::<users::RefreshRequest>()),
            (
                "GenerateApiKeyRequest",
                read_by::<users::GenerateApiKeyRequest>(),
            ),
            ("LogoutRequest", read_by::<users::LogoutRequest>()),
            (
                "CreateOwnKeyRequest",
                read_by::<keys::CreateOwnKeyRequest>(),
            ),
            (
                "CreateAccountRequest",
                read_by::<admin::CreateAccountRequest>(),
            ),
            ("AddCreditsRequest", read_by::<admin::AddCreditsRequest>()),
            ("CreateKeyRequest", read_by::<admin::CreateKeyRequest>()),
            ("CreateUserRequest", read_by::<admin::CreateUserRequest>()),
            ("SetPasswordRequest", read_by::<admin::SetPasswordRequest>()),
            (
                "SetTemplatesRequest",
                read_by::<account_rules::SetTemplatesRequest>(),
            ),
            (
                "SetSenderRequest",
                read_by::<account_rules::SetSenderRequest>(),
            ),
            (
                "SetFallbackRequest",
                read_by::<account_fallback::SetFallbackRequest>(),
            ),
        ])
    }

    #[test]
    fn request_bodies_are_documented_field_for_field() {
        let structs = request_structs();
        assert!(
            structs["SendOtpRequest"].contains("number"),
            "the field names are read from the structs"
        );
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let Some(reference) = operation
                    .pointer("/requestBody/content/application~1json/schema/$ref")
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                let name = reference.trim_start_matches("#/components/schemas/");
                let read = structs.get(name).unwrap_or_else(|| {
                    panic!("{method} {path}: its body {name} is not a struct a handler reads")
                });
                let shown: BTreeSet<&str> = doc["components"]["schemas"][name]["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                assert_eq!(
                    &shown, read,
                    "{method} {path}: {name} as documented and as read"
                );
                documented.insert(name);
            }
        }
        let undocumented: Vec<_> = structs
            .keys()
            .filter(|name| !documented.contains(*name))
            .collect();
        assert!(
            undocumented.is_empty(),
            "no operation documents {undocumented:?}"
        );
    }
}
