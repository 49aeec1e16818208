//! SIP messages (RFC 3261 section 7): a start line, headers, a body; a formatter paired with
//! a parser, and framing for stream transports.
//!
//! Header names are matched case-insensitively and the compact forms (`v`, `f`, `t`, `i`,
//! `m`, `l`, `c`, `k`, `s`, `e`) are stored under their full names, so `header("Via")`
//! finds a `v:` line. Folded header lines (a line starting with a space or tab continues
//! the previous one) are joined with one space. `Content-Length` is always written from
//! the body, never taken from the header list.

use std::fmt;

use thiserror::Error;

/// The longest message we accept, head and body: far above any INVITE or response an
/// outbound call sees, and small enough that a peer cannot make us buffer much.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// A request method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE.
    Invite,
    /// ACK.
    Ack,
    /// BYE.
    Bye,
    /// CANCEL.
    Cancel,
    /// OPTIONS.
    Options,
    /// Any other method, as written.
    Other(String),
}

impl Method {
    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Other(s) => s,
        }
    }

    /// Reads a method token (methods are case-sensitive).
    pub fn parse(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// The method.
        method: Method,
        /// The Request-URI, as written.
        uri: String,
    },
    /// `SIP/2.0 status reason`
    Response {
        /// The status code, 100-699.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
}

/// One header line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The name, in its full form.
    pub name: String,
    /// The value, trimmed, folds joined.
    pub value: String,
}

/// A SIP request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The request or status line.
    pub start: StartLine,
    /// Headers in order, without `Content-Length`.
    pub headers: Vec<Header>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why bytes are not a SIP message.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The head is not UTF-8.
    #[error("SIP message head is not UTF-8")]
    NotText,
    /// No blank line ends the head.
    #[error("SIP message head is not terminated by an empty line")]
    Unterminated,
    /// The first line is neither a request line nor a status line.
    #[error("bad SIP start line {0:?}")]
    BadStartLine(String),
    /// A header line has no colon or an empty name.
    #[error("bad SIP header line {0:?}")]
    BadHeader(String),
    /// `Content-Length` is not a number.
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// The body is shorter than `Content-Length` says.
    #[error("body has {got} bytes, Content-Length says {expected}")]
    Truncated {
        /// From the header.
        expected: usize,
        /// Present.
        got: usize,
    },
    /// The message is larger than [`MAX_MESSAGE_LEN`].
    #[error("SIP message of {len} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge {
        /// The length seen or announced.
        len: usize,
    },
    /// A message on a stream transport has no `Content-Length` (RFC 3261 18.3 requires it).
    #[error("SIP message on a stream has no Content-Length")]
    MissingContentLength,
}

/// The full name for a header name, compact or in any case; unknown names as given.
pub fn canonical_name(name: &str) -> &str {
    const NAMES: &[(&str, &str)] = &[
        ("v", "Via"),
        ("via", "Via"),
        ("f", "From"),
        ("from", "From"),
        ("t", "To"),
        ("to", "To"),
        ("i", "Call-ID"),
        ("call-id", "Call-ID"),
        ("m", "Contact"),
        ("contact", "Contact"),
        ("l", "Content-Length"),
        ("content-length", "Content-Length"),
        ("c", "Content-Type"),
        ("content-type", "Content-Type"),
        ("k", "Supported"),
        ("supported", "Supported"),
        ("s", "Subject"),
        ("subject", "Subject"),
        ("e", "Content-Encoding"),
        ("content-encoding", "Content-Encoding"),
        ("cseq", "CSeq"),
        ("max-forwards", "Max-Forwards"),
        ("www-authenticate", "WWW-Authenticate"),
        ("proxy-authenticate", "Proxy-Authenticate"),
        ("authorization", "Authorization"),
        ("proxy-authorization", "Proxy-Authorization"),
        ("record-route", "Record-Route"),
        ("route", "Route"),
        ("user-agent", "User-Agent"),
        ("allow", "Allow"),
    ];
    NAMES
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or(name, |(_, v)| v)
}

impl Message {
    /// A request with no headers and no body.
    pub fn request(method: Method, uri: impl Into<String>) -> Message {
        Message {
            start: StartLine::Request {
                method,
                uri: uri.into(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with no headers and no body.
    pub fn response(status: u16, reason: impl Into<String>) -> Message {
        Message {
            start: StartLine::Response {
                status,
                reason: reason.into(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header at the end; `Content-Length` is ignored (it is written from the body).
    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name);
        if name != "Content-Length" {
            self.headers.push(Header {
                name: name.to_owned(),
                value: value.into(),
            });
        }
    }

    /// [`Message::push_header`], by value.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Message {
        self.push_header(name, value);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Message {
        self.push_header("Content-Type", content_type);
        self.body = body.into();
        self
    }

    /// The first value of a header (any case, compact or full name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).next()
    }

    /// Every value of a header, in order.
    pub fn header_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name).to_owned();
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// The status code, for a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The method, for a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The `CSeq` number and method.
    pub fn cseq(&self) -> Option<(u32, Method)> {
        let (number, method) = self.header("CSeq")?.split_once(char::is_whitespace)?;
        Some((number.parse().ok()?, Method::parse(method.trim())))
    }

    /// The `Call-ID`.
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// The `branch` parameter of the topmost Via.
    pub fn top_via_branch(&self) -> Option<&str> {
        let top = self.header("Via")?.split(',').next()?;
        param(top, "branch")
    }

    /// The wire form: start line, headers, a `Content-Length` from the body, the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = match &self.start {
            StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { status, reason } => format!("SIP/2.0 {status} {reason}\r\n"),
        };
        for h in &self.headers {
            head.push_str(&h.name);
            head.push_str(": ");
            head.push_str(&h.value);
            head.push_str("\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses one whole message (a datagram, or what [`frame`] measured). Bytes past
    /// `Content-Length` are dropped; with no `Content-Length` the body is the rest.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge { len: bytes.len() });
        }
        let (head_len, body_start) = head_end(bytes).ok_or(ParseError::Unterminated)?;
        let head = std::str::from_utf8(&bytes[..head_len]).map_err(|_| ParseError::NotText)?;
        let mut lines = unfold(head).into_iter();
        let first = lines.next().unwrap_or_default();
        let start = parse_start_line(&first)?;
        let mut message = Message {
            start,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let mut content_length = None;
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| ParseError::BadHeader(line.clone()))?;
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(ParseError::BadHeader(line.clone()));
            }
            let value = value.trim();
            if canonical_name(name) == "Content-Length" {
                content_length = Some(parse_length(value)?);
            } else {
                message.push_header(name, value);
            }
        }
        let rest = &bytes[body_start..];
        message.body = match content_length {
            Some(len) if len > rest.len() => {
                return Err(ParseError::Truncated {
                    expected: len,
                    got: rest.len(),
                });
            }
            Some(len) => rest[..len].to_vec(),
            None => rest.to_vec(),
        };
        Ok(message)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Framing for stream transports: `Ok(Some(n))` when `buf` starts with a whole message of
/// `n` bytes, `Ok(None)` when more bytes are needed. Leading CRLF keep-alives must be
/// stripped first.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let Some((head_len, body_start)) = head_end(buf) else {
        if buf.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge { len: buf.len() });
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| ParseError::NotText)?;
    let mut length = None;
    for line in unfold(head).iter().skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && canonical_name(name.trim()) == "Content-Length"
        {
            length = Some(parse_length(value.trim())?);
        }
    }
    let total = body_start + length.ok_or(ParseError::MissingContentLength)?;
    if total > MAX_MESSAGE_LEN {
        return Err(ParseError::TooLarge { len: total });
    }
    Ok((buf.len() >= total).then_some(total))
}

/// A parameter of a header value (`;tag=`, `;branch=`), looked up case-insensitively among
/// the parameters after the `>` of a name-addr, or after the first `;` otherwise.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The URI inside a name-addr (`"Bob" <sip:bob@host>;tag=x` gives `sip:bob@host`), or an
/// addr-spec without its header parameters.
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// The end of the head (before the blank line) and the start of the body.
fn head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l + 1 < c => Some((l, l + 2)),
        (Some(c), _) => Some((c, c + 4)),
        (None, Some(l)) => Some((l, l + 2)),
        (None, None) => None,
    }
}

/// Head lines with folded continuations joined by one space.
fn unfold(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        match lines.last_mut() {
            Some(last) if raw.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(raw.trim());
            }
            _ => lines.push(raw.to_owned()),
        }
    }
    lines
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::BadStartLine(line.to_owned());
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&status) {
            return Err(bad());
        }
        return Ok(StartLine::Response {
            status,
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(uri), Some("SIP/2.0"), None)
            if !method.is_empty()
                && method.bytes().all(|b| b.is_ascii_alphabetic())
                && !uri.is_empty() =>
        {
            Ok(StartLine::Request {
                method: Method::parse(method),
                uri: uri.to_owned(),
            })
        }
        _ => Err(bad()),
    }
}

fn parse_length(value: &str) -> Result<usize, ParseError> {
    value
        .parse()
        .map_err(|_| ParseError::BadContentLength(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds ;rport\r\n\
        Max-Forwards: 70\r\n\
        t: Bob <sip:bob@biloxi.example.com>\r\n\
        f: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        m: <sip:alice@pc33.atlanta.example.com>\r\n\
        Subject: I know you're there,\r\n  \tpick up the phone\r\n\
        c: application/sdp\r\n\
        l: 4\r\n\
        \r\n\
        v=0\r\n";

    #[test]
    fn compact_and_folded_headers_are_read_under_their_full_names() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(
            m.start,
            StartLine::Request {
                method: Method::Invite,
                uri: "sip:bob@biloxi.example.com".into()
            }
        );
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.atlanta.example.com"));
        assert_eq!(m.header("call-id"), m.header("i"));
        assert_eq!(m.cseq(), Some((314_159, Method::Invite)));
        assert_eq!(m.top_via_branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(param(m.header("FROM").unwrap(), "tag"), Some("1928301774"));
        assert_eq!(param(m.header("To").unwrap(), "tag"), None);
        assert_eq!(
            uri_of(m.header("Contact").unwrap()),
            "sip:alice@pc33.atlanta.example.com"
        );
        assert_eq!(
            m.header("Subject"),
            Some("I know you're there, pick up the phone")
        );
        assert_eq!(m.header("Content-Type"), Some("application/sdp"));
        assert_eq!(m.header("Content-Length"), None, "written from the body");
        assert_eq!(m.body, b"v=0\r");
    }

    #[test]
    fn formatting_then_parsing_gives_the_same_message() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP"));
        assert!(text.ends_with("Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\r"));
        assert_eq!(Message::parse(&bytes).unwrap(), m);

        let response = Message::response(180, "Ringing")
            .with_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx")
            .with_header("To", "<sip:b@h>;tag=9");
        assert_eq!(
            response.to_bytes(),
            b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
              To: <sip:b@h>;tag=9\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(Message::parse(&response.to_bytes()).unwrap(), response);
    }

    #[test]
    fn status_lines_and_bad_lines() {
        let m = Message::parse(b"SIP/2.0 486 Busy Here\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(m.status(), Some(486));
        assert_eq!(m.method(), None);
        assert!(m.body.is_empty());
        let m = Message::parse(b"SIP/2.0 200\nl: 0\n\n").unwrap();
        assert_eq!(
            m.start,
            StartLine::Response {
                status: 200,
                reason: String::new()
            }
        );
        assert_eq!(
            Message::parse(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ParseError::BadStartLine("HTTP/1.1 200 OK".into()))
        );
        assert_eq!(
            Message::parse(b"SIP/2.0 99 Low\r\n\r\n"),
            Err(ParseError::BadStartLine("SIP/2.0 99 Low".into()))
        );
        assert_eq!(
            Message::parse(b"BYE sip:x SIP/2.0\r\nno colon\r\n\r\n"),
            Err(ParseError::BadHeader("no colon".into()))
        );
        assert_eq!(
            Message::parse(b"BYE sip:x SIP/2.0\r\nl: ten\r\n\r\n"),
            Err(ParseError::BadContentLength("ten".into()))
        );
        assert_eq!(
            Message::parse(b"BYE sip:x SIP/2.0\r\nl: 10\r\n\r\nabc"),
            Err(ParseError::Truncated {
                expected: 10,
                got: 3
            })
        );
        assert_eq!(
            Message::parse(b"BYE sip:x SIP/2.0\r\n"),
            Err(ParseError::Unterminated)
        );
    }

    #[test]
    fn stream_framing_waits_for_the_whole_body() {
        let bytes = Message::parse(INVITE.as_bytes()).unwrap().to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(frame(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(b"SIP/2.0 100 Trying\r\n");
        assert_eq!(frame(&two), Ok(Some(bytes.len())));
        assert_eq!(
            frame(b"SIP/2.0 100 Trying\r\n\r\n"),
            Err(ParseError::MissingContentLength)
        );
        assert_eq!(
            frame(b"SIP/2.0 200 OK\r\nl: 99999999\r\n\r\n"),
            Err(ParseError::TooLarge {
                len: 99_999_999 + 31
            })
        );
        assert_eq!(
            frame(&vec![b'a'; MAX_MESSAGE_LEN + 1]),
            Err(ParseError::TooLarge {
                len: MAX_MESSAGE_LEN + 1
            })
        );
    }

    #[test]
    fn params_and_uris() {
        assert_eq!(
            param("SIP/2.0/TCP h:5060;rport;BRANCH=z9hG4bKa", "branch"),
            Some("z9hG4bKa")
        );
        assert_eq!(param("SIP/2.0/TCP h:5060;rport", "rport"), Some(""));
        assert_eq!(param("<sip:a@h;tag=uri>;tag=hdr", "tag"), Some("hdr"));
        assert_eq!(param("sip:a@h;tag=x", "tag"), Some("x"));
        assert_eq!(uri_of("\"A, B\" <sip:a@h;lr>;tag=1"), "sip:a@h;lr");
        assert_eq!(uri_of("sip:a@h;tag=1"), "sip:a@h");
    }
}
