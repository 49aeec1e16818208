//! The one success envelope: `{status, success: true, message, errors: [], data}`,
//! the shape of every reply that is not an error (errors have theirs in
//! [`super::error`]).
//!
//! TingTing's list and read replies carry no `message`, so an envelope made by
//! [`Envelope::data`] leaves the key out; one whose data is [`NoData`] leaves
//! out `data`. Replies that add keys of their own at the top level (a login's
//! tokens, a key's `token`) flatten an envelope beside them.

use std::any::TypeId;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::FieldError;

/// A success reply around `data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T: ToSchema + 'static> {
    pub status: u16,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "is_no_data")]
    pub data: T,
}

/// The data of a reply that has none: the envelope then has no `data` key.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoData;

fn is_no_data<T: 'static>(_: &T) -> bool {
    TypeId::of::<T>() == TypeId::of::<NoData>()
}

impl<T: ToSchema + 'static> Envelope<T> {
    /// 200 with a message.
    pub fn ok(message: &str, data: T) -> Envelope<T> {
        Envelope {
            status: 200,
            success: true,
            message: Some(message.to_owned()),
            errors: Vec::new(),
            data,
        }
    }

    /// 200 without a message, as TingTing's list and read replies are.
    pub fn data(data: T) -> Envelope<T> {
        Envelope {
            message: None,
            ..Envelope::ok("", data)
        }
    }
}

impl<T: ToSchema + Serialize + 'static> Envelope<T> {
    /// 201 with a message, as a response.
    pub fn created(message: &str, data: T) -> Response {
        let envelope = Envelope {
            status: 201,
            ..Envelope::ok(message, data)
        };
        (StatusCode::CREATED, Json(envelope)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_leaves_out_a_missing_message_and_missing_data() {
        let listed = serde_json::to_value(Envelope::data(vec![1])).unwrap();
        assert_eq!(
            listed,
            serde_json::json!({"status": 200, "success": true, "errors": [], "data": [1]})
        );
        let done = serde_json::to_value(Envelope::ok("Done.", NoData)).unwrap();
        assert_eq!(
            done,
            serde_json::json!({"status": 200, "success": true, "message": "Done.", "errors": []})
        );
    }
}
