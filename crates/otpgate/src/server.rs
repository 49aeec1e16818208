//! The HTTP accept loop: hyper serving the router over HTTP/1.1 on every
//! connection (as `axum::serve` did), with the limits `axum::serve` does not let
//! us set.
//!
//! - A client has `api.header_read_timeout_seconds` to send a request's line and
//!   headers, from its first byte (or, on a kept-alive connection, from the end of
//!   the previous response); then the connection is closed. A slowloris client,
//!   one byte every few seconds, holds a socket that long and no longer.
//! - A request's line and headers may take `api.max_header_bytes`; more, or
//!   over 100 header fields, is answered with 431 and the connection closed.
//! - A whole request, headers and body, must arrive within
//!   `api.request_timeout_seconds` of its first byte; a body still incomplete
//!   then is answered with 408 `request_timeout` and the connection closed. A
//!   handler still working after its body arrived is never cut.
//! - At most [`ConnectionLimits::max_connections`] connections are open at
//!   once (startup derives it from the file limit); one more is answered with
//!   503 `connection_limit` and closed.
//! - At most `api.max_connections_per_client` connections are open at once
//!   from one client address (an IPv6 client counts by its /64); one more is
//!   answered with 429 `client_connection_limit` and closed. Trusted proxies
//!   are exempt: behind one, each request counts against the client address it
//!   forwards while it runs.
//!
//! Each request carries the peer's address as axum's `ConnectInfo`, as
//! `into_make_service_with_connect_info` would give it, and the client's address
//! as [`ClientIp`]: what per-address limits and logs use. From a trusted proxy
//! (`api.trusted_proxies`) the client is the rightmost `X-Forwarded-For` address
//! that is not itself a trusted proxy, and [`Origin`] honours its
//! `X-Forwarded-Proto` and `X-Forwarded-Host`; from anyone else those headers
//! are ignored.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::api::error::{ApiError, ErrorEnvelope, FieldError};
use crate::metrics::Metrics;
pub use crate::peer::{Cidr, ClientIp, Forwarded, LocalAddr, Origin, is_valid_host};
pub use crate::process::open_file_limit;

/// The least `max_header_bytes` honoured: room for a request line, a bearer key
/// and the usual headers.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Refused connections answered at once; beyond this they are closed without
/// an answer, so a flood of refusals cannot itself use up file descriptors.
const MAX_ANSWERED_REFUSALS: usize = 32;

/// How long a refused connection is kept to deliver its answer and read what
/// the client sent (closing on unread input would be a reset, which can destroy
/// the answer before the client reads it).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Limits on what a client may do before its request reaches the router.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Time to send the request line and headers.
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers; at least [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// Time to send a whole request, headers and body, from its first byte.
    pub request_timeout: Duration,
    /// Connections open at once on this listener; at least 1.
    pub max_connections: usize,
    /// Connections open at once from one client address (requests in flight,
    /// for an address a trusted proxy forwards); 0: no cap.
    pub max_connections_per_client: usize,
    /// Proxies whose `X-Forwarded-*` headers are believed, and whose own
    /// connections are not capped per address.
    pub trusted_proxies: Arc<[Cidr]>,
}

impl ConnectionLimits {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

/// The most connections a process whose file limit is `nofile` may hold open
/// when `reserved` descriptors are kept for everything else (the store's pool,
/// carrier binds, outgoing HTTP, files): `setting`, or less when the limit
/// leaves less room, never below 1. `None`: the limit is unknown.
pub fn effective_max_connections(setting: usize, nofile: Option<u64>, reserved: u64) -> usize {
    let setting = setting.max(1);
    match nofile {
        Some(n) => {
            let room = usize::try_from(n.saturating_sub(reserved)).unwrap_or(usize::MAX);
            setting.min(room).max(1)
        }
        None => setting,
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting
/// and waits for the connections in progress to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.min(limits.request_timeout))
        .max_header_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));

    let local = listener.local_addr().ok();
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = Arc::new(ClientCounts::new(limits.max_connections_per_client));
    let refusals = Arc::new(Refusals::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics.inc(
                "otpgate_http_refused_total",
                &[("reason", "connection_limit")],
            );
            refusals.answer(stream, Refusal::ConnectionLimit);
            continue;
        };
        let proxy = limits.trusts(peer.ip());
        let slot = if proxy {
            None
        } else {
            match per_client.try_acquire(peer.ip()) {
                Ok(slot) => slot,
                Err(Full) => {
                    metrics.inc(
                        "otpgate_http_refused_total",
                        &[("reason", "client_connection_limit")],
                    );
                    refusals.answer(stream, Refusal::ClientConnectionLimit);
                    continue;
                }
            }
        };
        let clock = Arc::new(RequestClock::new());
        let io = TokioIo::new(Clocked {
            stream,
            clock: clock.clone(),
        });
        let conn = Arc::new(Conn {
            app: app.clone(),
            peer,
            local: local.unwrap_or(peer),
            proxy,
            clock,
            limits: limits.clone(),
            per_client: per_client.clone(),
            metrics: metrics.clone(),
        });
        let service = tower::service_fn(move |req| conn.clone().handle(req));
        let connection =
            builder.serve_connection(io, hyper_util::service::TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Held for as long as the connection is open.
            let _permit = permit;
            let _slot = slot;
            if let Err(e) = connection.await {
                // Timeouts, resets and malformed requests: the client's doing.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What every request on one connection shares.
struct Conn {
    app: Router,
    peer: SocketAddr,
    local: SocketAddr,
    /// The peer is a trusted proxy.
    proxy: bool,
    clock: Arc<RequestClock>,
    limits: ConnectionLimits,
    per_client: Arc<ClientCounts>,
    metrics: Arc<Metrics>,
}

impl Conn {
    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
    ) -> Result<Response, Infallible> {
        let started = self.clock.request_started().unwrap_or_else(Instant::now);
        let deadline = tokio::time::Instant::from_std(started + self.limits.request_timeout);
        let response = self.respond(req, deadline).await;
        // The next bytes read on this connection start the next request.
        self.clock.reset();
        Ok(response)
    }

    async fn respond(
        &self,
        req: hyper::Request<Incoming>,
        deadline: tokio::time::Instant,
    ) -> Response {
        let peer_ip = self.peer.ip().to_canonical();
        let (client, forwarded) = if self.proxy {
            (
                forwarded_client(req.headers(), peer_ip, &self.limits),
                Some(forwarded_origin(req.headers())),
            )
        } else {
            (peer_ip, None)
        };
        // Behind a trusted proxy, the client's requests in flight are what is
        // counted against its address.
        let _slot = if self.proxy {
            match self.per_client.try_acquire(client) {
                Ok(slot) => slot,
                Err(Full) => {
                    self.metrics.inc(
                        "otpgate_http_refused_total",
                        &[("reason", "client_connection_limit")],
                    );
                    // The proxy's connection stays open for its other clients.
                    return Refusal::ClientConnectionLimit.response(false);
                }
            }
        } else {
            None
        };

        let body_done = Arc::new(AtomicBool::new(req.body().is_end_stream()));
        let mut req = req.map(|inner| {
            Body::new(WatchedBody {
                inner,
                done: body_done.clone(),
            })
        });
        let extensions = req.extensions_mut();
        extensions.insert(ConnectInfo(self.peer));
        extensions.insert(ClientIp(client));
        extensions.insert(LocalAddr(self.local));
        if let Some(forwarded) = forwarded {
            extensions.insert(forwarded);
        }

        let answer = self.app.clone().oneshot(req);
        if body_done.load(Ordering::Acquire) {
            // No body to wait for (most GETs): no timer either.
            return match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        tokio::select! {
            biased;
            answer = answer => match answer {
                Ok(response) => response,
                Err(never) => match never {},
            },
            () = body_deadline(deadline, &body_done) => {
                self.metrics.inc("otpgate_http_refused_total", &[("reason", "request_timeout")]);
                Refusal::RequestTimeout.response(true)
            }
        }
    }
}

/// Completes at `deadline` if the request's body has not all arrived by then;
/// once it has, never: the handler may take what time it needs.
async fn body_deadline(deadline: tokio::time::Instant, body_done: &AtomicBool) {
    tokio::time::sleep_until(deadline).await;
    if body_done.load(Ordering::Acquire) {
        std::future::pending::<()>().await;
    }
}

/// A request body that says when its last byte has arrived.
struct WatchedBody {
    inner: Incoming,
    done: Arc<AtomicBool>,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// When the request being read on a connection sent its first byte.
struct RequestClock {
    origin: Instant,
    /// Nanoseconds from `origin` to the first byte of the current request; 0
    /// while none has arrived since the last response.
    started: AtomicU64,
}

impl RequestClock {
    fn new() -> Self {
        RequestClock {
            origin: Instant::now(),
            started: AtomicU64::new(0),
        }
    }

    fn bytes_arrived(&self) {
        if self.started.load(Ordering::Relaxed) == 0 {
            let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.started.store(nanos.max(1), Ordering::Relaxed);
        }
    }

    fn request_started(&self) -> Option<Instant> {
        match self.started.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.origin + Duration::from_nanos(nanos)),
        }
    }

    fn reset(&self) {
        self.started.store(0, Ordering::Relaxed);
    }
}

/// A connection's socket, noting on its clock when a request's bytes arrive.
struct Clocked {
    stream: TcpStream,
    clock: Arc<RequestClock>,
}

impl AsyncRead for Clocked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Clocked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The client's address behind trusted proxies: walking `X-Forwarded-For` from
/// the right (the hop nearest to us), the first address that is not a trusted
/// proxy; the leftmost if all are. An entry that is not an address stops the
/// walk at the last trusted hop, which is then the client: what is left of it
/// is anyone's writing.
fn forwarded_client(headers: &HeaderMap, peer: IpAddr, limits: &ConnectionLimits) -> IpAddr {
    let mut client = peer;
    let values: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    for value in values.into_iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for hop in text.rsplit(',') {
            let Some(ip) = parse_hop(hop.trim()) else {
                return client;
            };
            client = ip;
            if !limits.trusts(ip) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// `X-Forwarded-Proto` and `X-Forwarded-Host` as a trusted proxy sent them:
/// the first value of each (the one the client-facing proxy wrote), kept only
/// when it is `http`/`https` and a valid `host[:port]`.
fn forwarded_origin(headers: &HeaderMap) -> Forwarded {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let proto = first("x-forwarded-proto").and_then(|p| {
        if p.eq_ignore_ascii_case("https") {
            Some("https")
        } else if p.eq_ignore_ascii_case("http") {
            Some("http")
        } else {
            None
        }
    });
    let host = first("x-forwarded-host")
        .filter(|h| is_valid_host(h))
        .map(str::to_owned);
    Forwarded { proto, host }
}

/// The cap on connections is full.
#[derive(Debug)]
struct Full;

/// Open connections (or forwarded requests in flight) per client address.
struct ClientCounts {
    max: usize,
    // std Mutex: held for a map update only, never across an await.
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientCounts {
    fn new(max: usize) -> Self {
        ClientCounts {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more from `ip`, held until the slot is dropped; `None`
    /// when there is no cap.
    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Option<ClientSlot>, Full> {
        if self.max == 0 {
            return Ok(None);
        }
        let key = client_key(ip);
        let mut open = self.open.lock().expect("client counts poisoned");
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return Err(Full);
        }
        *n += 1;
        Ok(Some(ClientSlot {
            counts: self.clone(),
            key,
        }))
    }
}

/// What one client address is counted as: an IPv4 address, or the /64 of an
/// IPv6 one (a single host is commonly given a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

struct ClientSlot {
    counts: Arc<ClientCounts>,
    key: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().expect("client counts poisoned");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Why the edge answered instead of the router.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// 503: every connection this listener may hold is in use.
    ConnectionLimit,
    /// 429: the client's address holds all the connections it may.
    ClientConnectionLimit,
    /// 408: the request's headers and body did not all arrive in time.
    RequestTimeout,
}

impl Refusal {
    fn error(self) -> (StatusCode, &'static str, &'static str, Option<u64>) {
        match self {
            Refusal::ConnectionLimit => (
                StatusCode::SERVICE_UNAVAILABLE,
                "connection_limit",
                "The server holds as many connections as it may; try again shortly.",
                Some(1),
            ),
            Refusal::ClientConnectionLimit => (
                StatusCode::TOO_MANY_REQUESTS,
                "client_connection_limit",
                "Too many connections from your address; close some and try again.",
                Some(1),
            ),
            Refusal::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request was not received in time; nothing was written.",
                None,
            ),
        }
    }

    /// The refusal in the API's envelope, closing the connection when `close`.
    fn response(self, close: bool) -> Response {
        let (status, code, message, retry_after) = self.error();
        let mut error = ApiError::refusal(
            status,
            FieldError::new("non_field_errors", code, message),
            None,
        );
        if let Some(secs) = retry_after {
            error = error.with_retry_after(secs);
        }
        let mut response = error.into_response();
        if close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// The same answer as raw HTTP/1.1, for a connection refused before any
    /// request was read from it.
    fn raw(self) -> Vec<u8> {
        let (status, code, message, retry_after) = self.error();
        let body = serde_json::to_vec(&ErrorEnvelope {
            status: status.as_u16(),
            success: false,
            message: message.to_owned(),
            errors: vec![FieldError::new("non_field_errors", code, message)],
            data: None,
            detail: None,
        })
        .expect("an envelope serializes");
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(secs) = retry_after {
            head.push_str(&format!("retry-after: {secs}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&body);
        raw
    }
}

/// Refused connections being answered.
#[derive(Default)]
struct Refusals {
    answering: Arc<AtomicUsize>,
}

impl Refusals {
    /// Answers `refusal` on `stream` and closes it, or closes it at once when
    /// [`MAX_ANSWERED_REFUSALS`] are already being answered.
    fn answer(&self, mut stream: TcpStream, refusal: Refusal) {
        if self.answering.fetch_add(1, Ordering::AcqRel) >= MAX_ANSWERED_REFUSALS {
            self.answering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let answering = self.answering.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                stream.write_all(&refusal.raw()).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 4096];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<(), std::io::Error>(())
            })
            .await;
            answering.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Connection-level failures (the client gave up before we accepted) are not
/// ours; others (out of file descriptors) get a pause so the loop does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            max_header_bytes: MIN_HEADER_BYTES,
            request_timeout: Duration::from_secs(1),
            max_connections: 1,
            max_connections_per_client: 1,
            trusted_proxies: trusted.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_contain_their_addresses_only() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/",
            "10.0.0/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_forwarded_address_not_trusted() {
        let limits = limits(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        let proxy = ip("10.0.0.1");
        assert_eq!(forwarded_client(&h, proxy, &limits), proxy, "no header");
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 198.51.100.4, 10.0.0.2"),
        );
        assert_eq!(forwarded_client(&h, proxy, &limits), ip("198.51.100.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.3:4711"));
        assert_eq!(
            forwarded_client(&h, proxy, &limits),
            ip("198.51.100.4"),
            "a second header continues the list"
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.4, 10.0.0.5"),
        );
        assert_eq!(
            forwarded_client(&h, proxy, &limits),
            ip("10.0.0.4"),
            "all trusted: the leftmost"
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.4, garbage, 10.0.0.6"),
        );
        assert_eq!(
            forwarded_client(&h, proxy, &limits),
            ip("10.0.0.6"),
            "garbage stops the walk"
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:80"),
        );
        assert_eq!(forwarded_client(&h, proxy, &limits), ip("2001:db8::1"));
    }

    #[test]
    fn hosts_are_names_or_addresses_with_an_optional_port() {
        for good in [
            "otp.example.com",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8080",
            "my_host",
        ] {
            assert!(is_valid_host(good), "{good}");
        }
        for bad in [
            "",
            "evil.com/x",
            "a b",
            "host:",
            "host:99999",
            "host:8a",
            "a:b:c",
            "[::1",
            "[nothost]",
            "[::1]x",
            "evil.com\"onmouseover",
            "x@evil.com",
            ":80",
        ] {
            assert!(!is_valid_host(bad), "{bad}");
        }
        assert!(!is_valid_host(&"a".repeat(256)));
    }

    #[test]
    fn forwarded_proto_and_host_are_kept_only_when_well_formed() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS, http"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("otp.example.com"),
        );
        assert_eq!(
            forwarded_origin(&h),
            Forwarded {
                proto: Some("https"),
                host: Some("otp.example.com".into())
            }
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("javascript"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("evil.com/phish?"),
        );
        assert_eq!(forwarded_origin(&h), Forwarded::default());
    }

    #[test]
    fn the_connection_cap_leaves_room_for_the_reserved_descriptors() {
        assert_eq!(effective_max_connections(10_000, Some(1024), 106), 918);
        assert_eq!(effective_max_connections(100, Some(1024), 106), 100);
        assert_eq!(
            effective_max_connections(100, Some(50), 106),
            1,
            "never below 1"
        );
        assert_eq!(effective_max_connections(100, None, 106), 100);
        assert_eq!(effective_max_connections(0, None, 0), 1);
    }

    #[test]
    fn per_client_slots_count_ipv6_by_its_64_and_free_on_drop() {
        let counts = Arc::new(ClientCounts::new(1));
        let a = counts.try_acquire(ip("2001:db8:0:1::1")).unwrap();
        assert!(
            counts.try_acquire(ip("2001:db8:0:1::2")).is_err(),
            "same /64"
        );
        let b = counts.try_acquire(ip("2001:db8:0:2::1")).unwrap();
        assert!(counts.try_acquire(ip("192.0.2.1")).unwrap().is_some());
        drop(a);
        assert!(counts.try_acquire(ip("2001:db8:0:1::3")).is_ok());
        drop(b);
        assert!(
            counts.open.lock().unwrap().is_empty(),
            "no entry is left behind"
        );
        let uncapped = Arc::new(ClientCounts::new(0));
        assert!(uncapped.try_acquire(ip("192.0.2.1")).unwrap().is_none());
    }

    #[test]
    fn a_raw_refusal_is_an_http_response_in_the_envelope() {
        let raw = String::from_utf8(Refusal::ConnectionLimit.raw()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("retry-after: 1"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["status"], 503);
        assert_eq!(body["errors"][0]["code"], "connection_limit");
    }
}
