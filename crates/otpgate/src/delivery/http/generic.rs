//! A driver for any HTTP SMS API, described in configuration: a method, a URL,
//! headers, a body template and how to read the answer.
//!
//! Templates (the URL and the body) may use these placeholders:
//!
//! | placeholder | value |
//! |---|---|
//! | `{to}` | the number in E.164, `+9779851023212` |
//! | `{to_national}` | the number without its country code, `9851023212` |
//! | `{text}` | the rendered message |
//! | `{sender}` | the account's own sender on the route, else the configured `sender` |
//! | `{otp_id}` | otpgate's id of the OTP |
//!
//! Each value is escaped for where it lands: percent-encoded (UTF-8, everything but
//! `A-Z a-z 0-9 - . _ ~`) in the URL and in form bodies, JSON-string-escaped in
//! JSON bodies (write `"{text}"` with the quotes in the template). A brace that
//! does not open one of these names is literal text, so a JSON body is written as
//! it is; an unknown `{name}` is a configuration error, caught when the driver is
//! built. Headers are sent as configured, without placeholders.
//!
//! Outcomes, in this order:
//!
//! | answer | outcome |
//! |---|---|
//! | a status in `success_status` (default: any 2xx) | `Sent`, the provider id read at `id_pointer` if configured |
//! | a status in `permanent_failure_statuses` | `Failed` |
//! | any other status | `Retry` |
//! | connection failure, timeout | `Retry` |
//!
//! Nothing is permanent unless the operator says so: a generic API's statuses mean
//! whatever its vendor decided, and a retry is bounded by the attempt limit. A
//! non-success body is quoted in the error after [`super::scrub`] (header values,
//! the message and the code removed).

use std::collections::BTreeMap;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use otp_domain::phone::PhoneNumber;
use otp_domain::sender::SenderId;
use otp_store::ClaimedJob;

use super::{BuildError, Upstream, default_capacity, default_timeout_ms};
use crate::delivery::{DeliveryOutcome, Driver};
use otp_domain::secret::Secret;

/// The HTTP method of the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    #[default]
    Post,
}

/// How a POST body is encoded, which decides how values are escaped in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum BodyType {
    /// `application/json`: values are JSON-string-escaped.
    #[default]
    #[serde(rename = "application/json", alias = "json")]
    Json,
    /// `application/x-www-form-urlencoded`: values are percent-encoded.
    #[serde(rename = "application/x-www-form-urlencoded", alias = "form")]
    Form,
}

impl BodyType {
    fn mime(self) -> &'static str {
        match self {
            BodyType::Json => "application/json",
            BodyType::Form => "application/x-www-form-urlencoded",
        }
    }

    fn escape(self) -> Escape {
        match self {
            BodyType::Json => Escape::Json,
            BodyType::Form => Escape::Percent,
        }
    }
}

/// How to reach an HTTP SMS API. `Debug` shows neither header values, nor the
/// URL's query, nor the body template: any of them may hold a key.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericHttpConfig {
    /// `GET` or `POST` (default).
    #[serde(default)]
    pub method: Method,
    /// The URL template, e.g. `https://sms.example.com/send?to={to}&text={text}`.
    pub url: String,
    /// Headers sent with every request, e.g. `Authorization = "Bearer ..."`.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret<String>>,
    /// The body template, POST only, e.g. `{"to": "{to}", "text": "{text}"}`.
    #[serde(default)]
    pub body: Option<String>,
    /// `application/json` (default) or `application/x-www-form-urlencoded`
    /// (`json` and `form` are accepted too).
    #[serde(default)]
    pub content_type: BodyType,
    /// The value of `{sender}` (default empty).
    #[serde(default)]
    pub sender: String,
    /// The statuses that mean "sent"; empty (the default) means any 2xx.
    #[serde(default)]
    pub success_status: Vec<u16>,
    /// The statuses that mean "never going to work" (default none), e.g. `[400, 404, 422]`.
    #[serde(default)]
    pub permanent_failure_statuses: Vec<u16>,
    /// A JSON Pointer (RFC 6901) into a success reply to the provider's message
    /// id, e.g. `/data/id` (default none).
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// Total time for one request, in milliseconds (default 10,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests in flight at once (default 32).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
}

impl GenericHttpConfig {
    /// A POST with no body to `url`, every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        GenericHttpConfig {
            method: Method::default(),
            url: url.into(),
            headers: BTreeMap::new(),
            body: None,
            content_type: BodyType::default(),
            sender: String::new(),
            success_status: Vec::new(),
            permanent_failure_statuses: Vec::new(),
            id_pointer: None,
            timeout_ms: default_timeout_ms(),
            capacity: default_capacity(),
        }
    }
}

impl std::fmt::Debug for GenericHttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.url.split_once('?') {
            Some((path, _)) => format!("{path}?[redacted]"),
            None => self.url.clone(),
        };
        f.debug_struct("GenericHttpConfig")
            .field("method", &self.method)
            .field("url", &url)
            .field("headers", &self.headers)
            .field("body", &self.body.as_ref().map(|_| "[redacted]"))
            .field("content_type", &self.content_type)
            .field("sender", &self.sender)
            .field("success_status", &self.success_status)
            .field(
                "permanent_failure_statuses",
                &self.permanent_failure_statuses,
            )
            .field("id_pointer", &self.id_pointer)
            .field("timeout_ms", &self.timeout_ms)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A value a template can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    To,
    ToNational,
    Text,
    Sender,
    OtpId,
}

impl Placeholder {
    const ALL: [Placeholder; 5] = [
        Placeholder::To,
        Placeholder::ToNational,
        Placeholder::Text,
        Placeholder::Sender,
        Placeholder::OtpId,
    ];

    /// The name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::To => "to",
            Placeholder::ToNational => "to_national",
            Placeholder::Text => "text",
            Placeholder::Sender => "sender",
            Placeholder::OtpId => "otp_id",
        }
    }
}

/// How values are escaped where they are put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// For URLs and form bodies: UTF-8 bytes percent-encoded, all but unreserved.
    Percent,
    /// For the inside of a JSON string: `"` `\` and control characters escaped.
    Json,
}

/// The values of one delivery.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub to: &'a str,
    pub to_national: &'a str,
    pub text: &'a str,
    pub sender: &'a str,
    pub otp_id: &'a str,
}

impl Values<'_> {
    fn get(&self, p: Placeholder) -> &str {
        match p {
            Placeholder::To => self.to,
            Placeholder::ToNational => self.to_national,
            Placeholder::Text => self.text,
            Placeholder::Sender => self.sender,
            Placeholder::OtpId => self.otp_id,
        }
    }
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{name}` where `name` is none of the placeholders.
    #[error(
        "unknown placeholder {{{0}}}; the known ones are {{to}}, {{to_national}}, {{text}}, {{sender}}, {{otp_id}}"
    )]
    UnknownPlaceholder(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Value(Placeholder),
}

/// A parsed template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Splits `source` into literal text and placeholders. `{name}` with `name`
    /// made of lowercase letters, digits and `_` must be a known placeholder; any
    /// other brace is literal.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name = after
                .find('}')
                .map(|close| &after[..close])
                .filter(|name| is_name(name));
            match name {
                Some(name) => {
                    let Some(p) = Placeholder::ALL.into_iter().find(|p| p.name() == name) else {
                        return Err(TemplateError::UnknownPlaceholder(name.to_owned()));
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Value(p));
                    rest = &after[name.len() + 1..];
                }
                None => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the template uses `p`.
    pub fn uses(&self, p: Placeholder) -> bool {
        self.parts.contains(&Part::Value(p))
    }

    /// The text with every placeholder replaced by its escaped value.
    pub fn render(&self, values: &Values<'_>, escape: Escape) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Value(p) => {
                    let value = values.get(*p);
                    match escape {
                        Escape::Percent => percent_encode(value, &mut out),
                        Escape::Json => json_escape(value, &mut out),
                    }
                }
            }
        }
        out
    }
}

fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// RFC 3986 percent-encoding of every byte but the unreserved ones; valid both
/// in a URL and in an `application/x-www-form-urlencoded` body.
fn percent_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// The inside of a JSON string literal (serde_json's escaping, quotes dropped).
fn json_escape(value: &str, out: &mut String) {
    let quoted = serde_json::Value::from(value).to_string();
    out.push_str(&quoted[1..quoted.len() - 1]);
}

/// Delivers through an HTTP API described by a [`GenericHttpConfig`].
pub struct GenericHttpDriver {
    upstream: Upstream,
    method: Method,
    url: Template,
    headers: HeaderMap,
    /// Header values, removed from any reply text quoted in an error.
    header_secrets: Vec<String>,
    body: Option<(Template, BodyType)>,
    sender: String,
    success_status: Vec<u16>,
    permanent_failure_statuses: Vec<u16>,
    id_pointer: Option<String>,
}

impl GenericHttpDriver {
    pub fn new(config: GenericHttpConfig) -> Result<Self, BuildError> {
        let url =
            Template::parse(&config.url).map_err(|e| BuildError::invalid("url", e.to_string()))?;
        // Percent-encoded values cannot change a URL's structure, so if the template
        // gives a URL with sample values it gives one with every value.
        let sample = Values {
            to: "+9779851023212",
            to_national: "9851023212",
            text: "sample text",
            sender: "sender",
            otp_id: "1",
        };
        let parsed = reqwest::Url::parse(&url.render(&sample, Escape::Percent))
            .map_err(|e| BuildError::invalid("url", format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(BuildError::invalid("url", "must be http:// or https://"));
        }

        let body = match (config.method, &config.body) {
            (Method::Get, Some(_)) => {
                return Err(BuildError::invalid("body", "is only sent with method POST"));
            }
            (_, Some(source)) => Some((
                Template::parse(source).map_err(|e| BuildError::invalid("body", e.to_string()))?,
                config.content_type,
            )),
            (_, None) => None,
        };

        let mut headers = HeaderMap::new();
        let mut header_secrets = Vec::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BuildError::invalid("headers", format!("{name:?} is not a header name"))
            })?;
            let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                BuildError::invalid(
                    "headers",
                    format!("the value of {name} is not a valid header value"),
                )
            })?;
            v.set_sensitive(true);
            headers.insert(header, v);
            header_secrets.push(value.expose().clone());
        }
        if let Some((_, kind)) = &body
            && !headers.contains_key(CONTENT_TYPE)
        {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind.mime()));
        }

        for (field, list) in [
            ("success_status", &config.success_status),
            (
                "permanent_failure_statuses",
                &config.permanent_failure_statuses,
            ),
        ] {
            if let Some(bad) = list.iter().find(|s| !(100..=599).contains(*s)) {
                return Err(BuildError::invalid(
                    field,
                    format!("{bad} is not an HTTP status"),
                ));
            }
        }
        if let Some(both) = config.permanent_failure_statuses.iter().find(|s| {
            config.success_status.contains(s)
                || (config.success_status.is_empty() && super::is_success(**s))
        }) {
            return Err(BuildError::invalid(
                "permanent_failure_statuses",
                format!("{both} also means success"),
            ));
        }
        if let Some(pointer) = &config.id_pointer
            && !pointer.starts_with('/')
        {
            return Err(BuildError::invalid(
                "id_pointer",
                "a JSON Pointer starts with /",
            ));
        }

        Ok(GenericHttpDriver {
            upstream: Upstream::new(config.timeout_ms, config.capacity)?,
            method: config.method,
            url,
            headers,
            header_secrets,
            body,
            sender: config.sender,
            success_status: config.success_status,
            permanent_failure_statuses: config.permanent_failure_statuses,
            id_pointer: config.id_pointer,
        })
    }

    fn uses(&self, p: Placeholder) -> bool {
        self.url.uses(p) || self.body.as_ref().is_some_and(|(t, _)| t.uses(p))
    }

    /// Maps the answer to an outcome; see the module table. `secrets` (the message
    /// and the code) are removed from any reply text quoted, with the header values.
    pub fn outcome(&self, status: u16, body: &[u8], secrets: &[&str]) -> DeliveryOutcome {
        let success = if self.success_status.is_empty() {
            super::is_success(status)
        } else {
            self.success_status.contains(&status)
        };
        if success {
            let provider_message_id = self.id_pointer.as_deref().and_then(|pointer| {
                serde_json::from_slice::<serde_json::Value>(body)
                    .ok()?
                    .pointer(pointer)
                    .and_then(super::id_text)
            });
            return DeliveryOutcome::Sent {
                provider_message_id,
            };
        }
        let mut all: Vec<&str> = secrets.to_vec();
        all.extend(self.header_secrets.iter().map(String::as_str));
        let quoted = super::scrub(&String::from_utf8_lossy(body), &all);
        let error = if quoted.is_empty() {
            format!("upstream answered {status}")
        } else {
            format!("upstream answered {status}: {quoted}")
        };
        if self.permanent_failure_statuses.contains(&status) {
            DeliveryOutcome::Failed { error }
        } else {
            DeliveryOutcome::Retry { error }
        }
    }
}

/// The number without its country code: 10 digits for Nepal.
fn national(e164: &str) -> String {
    if let Some(n) = super::nepali_national(e164) {
        return n.to_owned();
    }
    match PhoneNumber::parse(e164) {
        Ok(number) => {
            let cc = format!("+{}", number.country_code());
            e164.strip_prefix(cc.as_str()).unwrap_or(e164).to_owned()
        }
        Err(_) => e164.trim_start_matches('+').to_owned(),
    }
}

#[async_trait::async_trait]
impl Driver for GenericHttpDriver {
    fn name(&self) -> &'static str {
        "http"
    }

    fn capacity(&self) -> usize {
        self.upstream.capacity
    }

    /// Only when a template uses `{sender}`: another driver's sender would
    /// go nowhere.
    fn takes_sender(&self) -> bool {
        self.uses(Placeholder::Sender)
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        self.deliver_as(job, None).await
    }

    async fn deliver_as(&self, job: &ClaimedJob, sender: Option<&SenderId>) -> DeliveryOutcome {
        let otp = &job.otp;
        let message = otp.message();
        let to_national = if self.uses(Placeholder::ToNational) {
            national(otp.number.as_str())
        } else {
            String::new()
        };
        let otp_id = otp.id.to_string();
        let values = Values {
            to: otp.number.as_str(),
            to_national: &to_national,
            text: &message,
            sender: sender.map_or(self.sender.as_str(), SenderId::as_str),
            otp_id: &otp_id,
        };
        let Ok(url) = reqwest::Url::parse(&self.url.render(&values, Escape::Percent)) else {
            return DeliveryOutcome::Retry {
                error: "the url template did not give a URL".to_owned(),
            };
        };
        let request = match self.method {
            Method::Get => self.upstream.client.get(url),
            Method::Post => self.upstream.client.post(url),
        };
        let mut request = request.headers(self.headers.clone());
        if let Some((template, kind)) = &self.body {
            request = request.body(template.render(&values, kind.escape()));
        }
        match self.upstream.send(request).await {
            Ok(reply) => self.outcome(reply.status, &reply.body, &[&message, otp.code.shown()]),
            Err(outcome) => outcome,
        }
    }
}
