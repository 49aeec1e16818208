//! Reading the fields of a request body, one at a time.
//!
//! A body arrives as a JSON object or a form ([`super::extract::Fields`]), so
//! a field may be a JSON string, number, list or `null`, or a form's text.
//! Each handler reads its body into its request struct, made of [`Raw`]
//! fields: reading never fails, and the same struct, through its
//! `#[schema(value_type = ...)]` attributes, is the body the OpenAPI document
//! shows, so the document cannot name a field the handler does not read nor
//! miss one it does (`request_bodies_are_documented_field_for_field`). The
//! readers below then take each field with its name, return the value when
//! it is usable and otherwise push one [`FieldError`] naming the field, so a
//! handler reports every problem of a request at once. A field that is absent
//! or `null` counts as not given, except where [`Raw::sent`] tells them apart.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use otp_store::Scopes;

use super::error::{ApiError, FieldError};

/// One field of a request body as it came: any JSON value, `null` included,
/// or nothing when it was left out.
#[derive(Debug, Default)]
pub(super) struct Raw(Option<Value>);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|value| Raw(Some(value)))
    }
}

impl Raw {
    /// The value, unless it is absent or `null`.
    pub(super) fn given(&self) -> Option<&Value> {
        self.0.as_ref().filter(|v| !v.is_null())
    }

    /// The value as sent, `null` included; `None` when left out.
    pub(super) fn sent(&self) -> Option<&Value> {
        self.0.as_ref()
    }
}

/// A body's fields as the request struct `R`: one of [`Raw`] fields, each
/// `#[serde(default)]`, which takes any object (fields it does not name are
/// ignored, as they always were).
pub(super) fn read<R: DeserializeOwned>(fields: Map<String, Value>) -> Result<R, ApiError> {
    serde_json::from_value(Value::Object(fields)).map_err(|e| ApiError::malformed(e.to_string()))
}

/// A field's value when it is a JSON string, without reporting anything.
pub(super) fn field_str(value: &Raw) -> Option<&str> {
    value.given().and_then(Value::as_str)
}

/// Reads a text field; numbers are taken as their decimal text (clients send
/// phone numbers and codes as JSON numbers too).
pub(super) fn text(value: &Raw, name: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match value.given()? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => {
            errors.push(FieldError::new(
                name,
                "invalid_type",
                format!("{name} must be a string."),
            ));
            None
        }
    }
}

/// A text field that must be given and not blank (`required`, `blank`).
pub(super) fn required_text(
    value: &Raw,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let text_value = text(value, name, errors);
    match text_value.as_deref().map(str::trim) {
        Some("") => {
            errors.push(FieldError::new(
                name,
                "blank",
                format!("{name} may not be blank."),
            ));
            None
        }
        Some(_) => text_value,
        None => {
            if value.given().is_none() {
                errors.push(FieldError::new(
                    name,
                    "required",
                    format!("{name} is required."),
                ));
            }
            None
        }
    }
}

/// A text field where an empty string also counts as not given.
pub(super) fn nonempty_text(
    value: &Raw,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    text(value, name, errors).filter(|s| !s.is_empty())
}

/// A text field that must be given with something besides spaces; blank
/// counts as missing (`required` for both).
pub(super) fn required_nonempty(
    value: &Raw,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let before = errors.len();
    let text_value = nonempty_text(value, name, errors).filter(|s| !s.trim().is_empty());
    if text_value.is_none() && errors.len() == before {
        errors.push(FieldError::new(
            name,
            "required",
            format!("{name} is required."),
        ));
    }
    text_value
}

/// An integer field, from a JSON integer or a decimal string (as forms send it).
pub(super) fn integer(value: &Raw, name: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let parsed = match value.given()? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    if parsed.is_none() {
        errors.push(FieldError::new(
            name,
            "invalid_type",
            format!("{name} must be an integer."),
        ));
    }
    parsed
}

/// A finite number field, from a JSON number or a decimal string.
pub(super) fn number_field(value: &Raw, name: &str, errors: &mut Vec<FieldError>) -> Option<f64> {
    let parsed = match value.given()? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(v) if v.is_finite() => Some(v),
        _ => {
            errors.push(FieldError::new(
                name,
                "invalid_type",
                format!("{name} must be a number."),
            ));
            None
        }
    }
}

/// The `scopes` field of a request that mints a key: a list of names
/// (`["send", "read"]`) or one string of names separated by commas or spaces
/// (`"send,read"`, as a form sends it). Absent or `null`: `None`.
pub(super) fn scopes_field(value: &Raw, errors: &mut Vec<FieldError>) -> Option<Scopes> {
    let text = match value.given()? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str())
            .collect::<Option<Vec<_>>>()
            .map(|names| names.join(",")),
        _ => None,
    };
    let parsed = match text {
        Some(t) => Scopes::parse_list(&t),
        None => Err("scopes must be a list of scope names".to_owned()),
    };
    match parsed {
        Ok(scopes) => Some(scopes),
        Err(reason) => {
            errors.push(FieldError::new(
                "scopes",
                "invalid",
                format!("Invalid scopes: {reason}."),
            ));
            None
        }
    }
}
