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
//!
//! Each request carries the peer's address as axum's `ConnectInfo`, as
//! `into_make_service_with_connect_info` would give it, and the client's address
//! as [`ClientIp`]: what per-address limits and logs use.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The least `max_header_bytes` honoured: room for a request line, a bearer key
/// and the usual headers.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// The address of the client a request came from, as a request extension: what
/// per-address limits count and failed logins log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// Limits on what a client may do before its request reaches the router.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send the request line and headers.
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers; at least [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting
/// and waits for the connections in progress to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));

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
        let service = app
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| with_peer(req, peer));
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, resets and malformed requests: the client's doing.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn with_peer(req: hyper::Request<Incoming>, peer: SocketAddr) -> axum::extract::Request {
    let mut req = req.map(Body::new);
    req.extensions_mut().insert(ConnectInfo(peer));
    req.extensions_mut().insert(ClientIp(peer.ip()));
    req
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
