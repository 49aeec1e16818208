//! Reading the fields of a request body, one at a time.
//!
//! A body arrives as a JSON object or a form ([`super::extract::Fields`]), so
//! a field may be a JSON string, number, list or `null`, or a form's text.
//! Each reader takes the field's name, returns the value when it is usable and
//! otherwise pushes one [`FieldError`] naming the field, so a handler reports
//! every problem of a request at once. A field that is absent or `null` counts
//! as not given everywhere.

use serde_json::{Map, Value};

use otp_store::Scopes;

use super::error::FieldError;

/// A field that is absent or JSON `null` counts as not given.
pub(super) fn given<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

/// A field's value when it is a JSON string, without reporting anything.
pub(super) fn field_str<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    given(fields, name).and_then(Value::as_str)
}

/// Reads a text field; numbers are taken as their decimal text (clients send
/// phone numbers and codes as JSON numbers too).
pub(super) fn text(
    fields: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match given(fields, name)? {
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
    fields: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let value = text(fields, name, errors);
    match value.as_deref().map(str::trim) {
        Some("") => {
            errors.push(FieldError::new(
                name,
                "blank",
                format!("{name} may not be blank."),
            ));
            None
        }
        Some(_) => value,
        None => {
            if given(fields, name).is_none() {
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
    fields: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    text(fields, name, errors).filter(|s| !s.is_empty())
}

/// A text field that must be given with something besides spaces; blank
/// counts as missing (`required` for both).
pub(super) fn required_nonempty(
    fields: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let before = errors.len();
    let value = nonempty_text(fields, name, errors).filter(|s| !s.trim().is_empty());
    if value.is_none() && errors.len() == before {
        errors.push(FieldError::new(
            name,
            "required",
            format!("{name} is required."),
        ));
    }
    value
}

/// An integer field, from a JSON integer or a decimal string (as forms send it).
pub(super) fn integer(
    fields: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    let parsed = match given(fields, name)? {
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
pub(super) fn number_field(
    fields: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<f64> {
    let parsed = match given(fields, name)? {
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
pub(super) fn scopes_field(
    fields: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<Scopes> {
    let value = given(fields, "scopes")?;
    let text = match value {
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
