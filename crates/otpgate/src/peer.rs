//! What the server knows of a request's connection, handed to handlers as
//! request extensions: the client's address (behind trusted proxies), the
//! local address, and what a trusted proxy said of the scheme and host. The
//! server ([`crate::server`]) inserts them; the API reads them, so neither
//! depends on the other for these types.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

/// The address of the client a request came from, as a request extension: what
/// per-address limits count and failed logins log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// The address a request's connection was accepted on, as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// What a trusted proxy said about how the client reached it, as a request
/// extension; each part only when present and well-formed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// `X-Forwarded-Proto`: `http` or `https`.
    pub proto: Option<&'static str>,
    /// `X-Forwarded-Host`, a valid `host[:port]`.
    pub host: Option<String>,
}

/// A `Host` value fit to be written into a link: a name of letters, digits,
/// `.`, `-` and `_`, or an IPv4 address, or an IPv6 address in brackets,
/// optionally followed by `:` and a port; 255 bytes at most.
pub fn is_valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 255 {
        return false;
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, port),
            None => (host, ""),
        }
    };
    let name_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let port_ok = (port.is_empty() && !host.ends_with(':'))
        || ((1..=5).contains(&port.len()) && port.parse::<u16>().is_ok());
    (host.starts_with('[') || !name.is_empty()) && name_ok && port_ok
}

/// How a client reached this server, for absolute links: the scheme and
/// `host[:port]`. Believes `X-Forwarded-Proto`/`X-Forwarded-Host` only from a
/// trusted proxy; takes a `Host` header only when [`is_valid_host`], else the
/// address the connection was accepted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: &'static str,
    pub host: String,
}

impl Origin {
    pub fn from_parts(parts: &Parts) -> Origin {
        let forwarded = parts.extensions.get::<Forwarded>();
        let scheme = forwarded.and_then(|f| f.proto).unwrap_or("http");
        let host = forwarded
            .and_then(|f| f.host.clone())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| is_valid_host(h))
                    .map(str::to_owned)
            })
            .or_else(|| parts.extensions.get::<LocalAddr>().map(|a| a.0.to_string()))
            .unwrap_or_else(|| "localhost".to_owned());
        Origin { scheme, host }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Origin::from_parts(parts))
    }
}

/// An address block of trusted proxies: `10.0.0.0/8`, `2001:db8::/32`, or one
/// address (`192.0.2.7`, a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = addr
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("{s:?} is not an address or a CIDR block"))?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}
