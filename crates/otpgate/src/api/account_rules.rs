//! The admin API's account rules: an account's approved message templates
//! and its sender ID per route (see `otp_store::rules`), with the admin token.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/admin/v1/accounts/{id}/templates/` | the approved templates |
//! | PUT | `/admin/v1/accounts/{id}/templates/` | replace them (`{"templates": [...]}`) |
//! | DELETE | `/admin/v1/accounts/{id}/templates/` | remove them all: any text again |
//! | GET | `/admin/v1/accounts/{id}/senders/` | the senders, by route |
//! | PUT | `/admin/v1/accounts/{id}/senders/{route}/` | set the sender on a route |
//! | DELETE | `/admin/v1/accounts/{id}/senders/{route}/` | back to the route's own sender |
//!
//! A template must hold `{otp}` and pass what a send's `message` passes; it
//! is kept normalized (whitespace runs collapsed, ends trimmed). A sender can
//! be set only on a route of this node's configuration whose driver takes
//! one (SMPP, Sparrow, a generic HTTP route whose templates use `{sender}`).

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use otp_domain::message::MessageTemplate;
use otp_domain::sender::SenderId;
use otp_store::rules::MAX_TEMPLATES;
use otp_store::{AccountSender, ApprovedTemplate, StoreError, now_micros};

use super::admin::{Admin, find_account};
use super::envelope::Envelope;
use super::error::{ApiError, FieldError};
use super::extract::Fields;
use super::fields::{Raw, required_text};
use super::list::rfc3339;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for (path, route) in [
        (
            "/admin/v1/accounts/{id}/templates/",
            get(list_templates)
                .put(replace_templates)
                .delete(clear_templates),
        ),
        ("/admin/v1/accounts/{id}/senders/", get(list_senders)),
        (
            "/admin/v1/accounts/{id}/senders/{route}/",
            put(set_sender).delete(remove_sender),
        ),
    ] {
        router = router
            .route(path, route.clone())
            .route(path.trim_end_matches('/'), route);
    }
    router
}

/// An approved template as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    /// Normalized: whitespace runs made one space, no space at either end.
    #[schema(example = "Your ACME code is {otp}.")]
    pub text: String,
    pub created_at: String,
}

/// An account's sender on one route.
#[derive(Debug, Serialize, ToSchema)]
pub struct SenderView {
    pub route: String,
    #[schema(example = "ACME")]
    pub sender: String,
    pub updated_at: String,
}

/// The body of `PUT /admin/v1/accounts/{id}/templates/`.
#[derive(Deserialize, ToSchema)]
pub struct SetTemplatesRequest {
    /// The approved texts, each with `{otp}` where the code goes (a list, or
    /// one string for one template). An empty list removes them all. At most
    /// 100; texts equal once normalized count once.
    #[serde(default)]
    #[schema(value_type = Vec<String>, required = true, example = json!(["Your ACME code is {otp}."]))]
    templates: Raw,
}

/// The body of `PUT /admin/v1/accounts/{id}/senders/{route}/`.
#[derive(Deserialize, ToSchema)]
pub struct SetSenderRequest {
    /// 1 to 11 ASCII letters and digits, or 1 to 15 digits.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "ACME")]
    sender: Raw,
}

fn template_view(t: ApprovedTemplate, state: &AppState) -> TemplateView {
    TemplateView {
        text: t.text,
        created_at: rfc3339(t.created_at, &state.tz),
    }
}

fn sender_view(s: AccountSender, state: &AppState) -> SenderView {
    SenderView {
        route: s.route,
        sender: s.sender.as_str().to_owned(),
        updated_at: rfc3339(s.updated_at, &state.tz),
    }
}

/// A store refusal of a rule change: the account went away (404), or a
/// bound the request passed was crossed meanwhile (400).
fn rule_error(e: StoreError, field: &str) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found(),
        StoreError::Conflict(reason) => {
            ApiError::validation(vec![FieldError::new(field, "invalid", reason)])
        }
        other => other.into(),
    }
}

/// The `templates` field: a list of texts, or one text, each a valid
/// template; every problem reported, each naming its place in the list.
fn templates_field(value: &Raw, errors: &mut Vec<FieldError>) -> Option<Vec<MessageTemplate>> {
    let texts: Vec<&Value> = match value.given() {
        None => {
            errors.push(FieldError::new(
                "templates",
                "required",
                "templates is required (an empty list removes them all).",
            ));
            return None;
        }
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one @ Value::String(_)) => vec![one],
        Some(_) => {
            errors.push(FieldError::new(
                "templates",
                "invalid_type",
                "templates must be a list of strings.",
            ));
            return None;
        }
    };
    if texts.len() > MAX_TEMPLATES {
        errors.push(FieldError::new(
            "templates",
            "too_many",
            format!("An account can have at most {MAX_TEMPLATES} approved templates."),
        ));
        return None;
    }
    let before = errors.len();
    let mut templates = Vec::with_capacity(texts.len());
    for (i, text) in texts.into_iter().enumerate() {
        let field = format!("templates[{i}]");
        match text.as_str() {
            None => errors.push(FieldError::new(
                &field,
                "invalid_type",
                format!("{field} must be a string."),
            )),
            Some(text) => match MessageTemplate::parse(text) {
                Ok(t) => templates.push(t),
                Err(e) => errors.push(FieldError::new(&field, "invalid", e.to_string())),
            },
        }
    }
    (errors.len() == before).then_some(templates)
}

/// An account's approved templates, oldest first; none means it may send
/// any text.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/templates/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The approved templates", body = Envelope<Vec<TemplateView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn list_templates(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<Vec<TemplateView>>>, ApiError> {
    let account = find_account(&state, &id).await?;
    let list = state.store.account_templates(account.id).await?;
    Ok(Json(Envelope::ok(
        "Approved templates.",
        list.into_iter().map(|t| template_view(t, &state)).collect(),
    )))
}

/// Make these texts the account's approved templates: from the next send
/// on, on every node, a send whose `message` (whitespace aside) is none of
/// them is refused with 400 `template_not_approved`. An empty list lets the
/// account send any text again.
#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{id}/templates/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    request_body(content = SetTemplatesRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The approved templates now", body = Envelope<Vec<TemplateView>>),
        (status = 400, description = "A template without `{otp}` or otherwise invalid (`templates[i]`), or more than 100 (`too_many`); nothing changed", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn replace_templates(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Fields(req): Fields<SetTemplatesRequest>,
) -> Result<Json<Envelope<Vec<TemplateView>>>, ApiError> {
    let account = find_account(&state, &id).await?;
    let mut errors = Vec::new();
    let Some(templates) = templates_field(&req.templates, &mut errors) else {
        return Err(ApiError::validation(errors));
    };
    let list = state
        .store
        .replace_account_templates(account.id, templates, now_micros())
        .await
        .map_err(|e| rule_error(e, "templates"))?;
    tracing::info!(
        account_id = account.id,
        templates = list.len(),
        "admin API: approved templates set"
    );
    Ok(Json(Envelope::ok(
        "Approved templates set.",
        list.into_iter().map(|t| template_view(t, &state)).collect(),
    )))
}

/// Remove every approved template: the account may send any text again.
#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{id}/templates/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "None left", body = Envelope<Vec<TemplateView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn clear_templates(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<Vec<TemplateView>>>, ApiError> {
    let account = find_account(&state, &id).await?;
    state
        .store
        .replace_account_templates(account.id, Vec::new(), now_micros())
        .await
        .map_err(|e| rule_error(e, "templates"))?;
    tracing::info!(
        account_id = account.id,
        "admin API: approved templates removed"
    );
    Ok(Json(Envelope::ok(
        "Approved templates removed; any text may be sent.",
        Vec::new(),
    )))
}

/// An account's own senders, by route.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/senders/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The senders", body = Envelope<Vec<SenderView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn list_senders(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<Vec<SenderView>>>, ApiError> {
    let account = find_account(&state, &id).await?;
    let list = state.store.account_senders(account.id).await?;
    Ok(Json(Envelope::ok(
        "Senders.",
        list.into_iter().map(|s| sender_view(s, &state)).collect(),
    )))
}

/// Set the account's sender on a route: its messages that go out on the
/// route carry it instead of the route's configured sender.
#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{id}/senders/{route}/",
    tag = "admin",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("route" = String, Path, description = "A configured route's name"),
    ),
    request_body(content = SetSenderRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The sender", body = Envelope<SenderView>),
        (status = 400, description = "An invalid sender (`invalid`), or a route whose driver takes no sender (`sender_not_supported`); nothing changed", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account or route, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn set_sender(
    _: Admin,
    State(state): State<AppState>,
    Path((id, route)): Path<(String, String)>,
    Fields(req): Fields<SetSenderRequest>,
) -> Result<Json<Envelope<SenderView>>, ApiError> {
    let account = find_account(&state, &id).await?;
    let Some(takes_sender) = state.runtime.route_takes_sender(&route) else {
        return Err(ApiError::not_found());
    };
    let mut errors = Vec::new();
    let sender = required_text(&req.sender, "sender", &mut errors).and_then(|s| {
        SenderId::parse(&s)
            .map_err(|e| errors.push(FieldError::new("sender", "invalid", e.to_string())))
            .ok()
    });
    if !takes_sender {
        errors.push(FieldError::new(
            "route",
            "sender_not_supported",
            "This route's driver takes no sender ID (SMPP, Sparrow and HTTP routes whose \
             templates use {sender} do).",
        ));
    }
    let Some(sender) = sender.filter(|_| errors.is_empty()) else {
        return Err(ApiError::validation(errors));
    };
    let set = state
        .store
        .set_account_sender(account.id, &route, &sender, now_micros())
        .await
        .map_err(|e| rule_error(e, "route"))?;
    // The route is a configured one, so its name is the operator's, not a client's.
    tracing::info!(account_id = account.id, route = %set.route, "admin API: sender set");
    Ok(Json(Envelope::ok("Sender set.", sender_view(set, &state))))
}

/// Remove the account's sender on a route: the route's own sender is used
/// again. Works for a route no longer configured too.
#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{id}/senders/{route}/",
    tag = "admin",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("route" = String, Path, description = "The route's name"),
    ),
    responses(
        (status = 200, description = "Removed", body = Envelope<Vec<SenderView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, no sender on this route, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn remove_sender(
    _: Admin,
    State(state): State<AppState>,
    Path((id, route)): Path<(String, String)>,
) -> Result<Json<Envelope<Vec<SenderView>>>, ApiError> {
    let account = find_account(&state, &id).await?;
    if !state
        .store
        .remove_account_sender(account.id, &route)
        .await?
    {
        return Err(ApiError::not_found());
    }
    tracing::info!(account_id = account.id, "admin API: sender removed");
    let list = state.store.account_senders(account.id).await?;
    Ok(Json(Envelope::ok(
        "Sender removed.",
        list.into_iter().map(|s| sender_view(s, &state)).collect(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: Value) -> Raw {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn templates_are_a_list_or_one_text_and_each_problem_names_its_place() {
        let mut errors = Vec::new();
        let one = templates_field(&raw(Value::from("Code {otp}")), &mut errors).unwrap();
        assert_eq!(one.len(), 1);
        let none = templates_field(&raw(serde_json::json!([])), &mut errors).unwrap();
        assert!(none.is_empty() && errors.is_empty());
        let bad = templates_field(
            &raw(serde_json::json!(["Code {otp}", "no code", 7])),
            &mut errors,
        );
        assert!(bad.is_none());
        let places: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            places,
            [
                ("templates[1]", "invalid"),
                ("templates[2]", "invalid_type")
            ]
        );
        let mut errors = Vec::new();
        let many: Vec<String> = (0..=MAX_TEMPLATES)
            .map(|i| format!("{i} {{otp}}"))
            .collect();
        assert!(templates_field(&raw(serde_json::json!(many)), &mut errors).is_none());
        assert_eq!(errors[0].code, "too_many");
        assert_eq!(
            ApiError::validation(errors).status(),
            axum::http::StatusCode::BAD_REQUEST
        );
    }
}
