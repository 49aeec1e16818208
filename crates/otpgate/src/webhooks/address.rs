//! Which addresses a webhook may reach: public unicast ones only, unless the
//! deployment allows more (`webhooks.allow_private_addresses`).
//!
//! An account chooses its webhook URL, and the deliveries list shows what
//! happened to every attempt; without this check a URL aimed at
//! `169.254.169.254`, `127.0.0.1:5432` or `10.0.0.7` would turn the gateway
//! into the account's scanner of the network it runs in. So every range of the
//! IANA special-purpose address registries (IPv4 and IPv6, as of 2025) is
//! refused, and multicast with them; for IPv6 everything outside global
//! unicast (`2000::/3`) is refused as well, which covers what those
//! registries do not list (the deprecated site-local and IPv4-compatible
//! prefixes, and whatever IANA assigns later outside `2000::/3`).
//!
//! The check runs twice: on a literal address when the URL is set
//! ([`refuse_literal`]), and on every address a host name resolves to, at
//! every connection ([`PublicResolver`]), so that a name that resolves
//! inward, or starts to later, is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// IPv4 ranges that are not public unicast: `(network, prefix length, what)`.
const V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private-use"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private-use"),
    // Includes DS-Lite, PCP and TURN anycast and NAT64 discovery.
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 31, 196, 0), 24, "AS112"),
    (Ipv4Addr::new(192, 52, 193, 0), 24, "AMT"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private-use"),
    (Ipv4Addr::new(192, 175, 48, 0), 24, "AS112"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    // Includes the limited broadcast address 255.255.255.255.
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// IPv6 ranges that are not public unicast, checked before the rule that
/// only `2000::/3` is global unicast (so the common ones get their own name).
const V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
        96,
        "IPv4-mapped",
    ),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, "IPv4-compatible"),
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96, "NAT64"),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, "NAT64"),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        "dummy prefix",
    ),
    // Includes Teredo, benchmarking, AMT, AS112 and ORCHID.
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4"),
    (
        Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0),
        48,
        "AS112",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16, "SRv6 SIDs"),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique-local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// What kind of special-purpose address `ip` is (`loopback`, `private-use`,
/// ...), or `None` for a public unicast address a webhook may reach.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => V4
            .iter()
            .find(|(net, len, _)| in_v4(v4, *net, *len))
            .map(|(_, _, what)| *what),
        IpAddr::V6(v6) => V6
            .iter()
            .find(|(net, len, _)| in_v6(v6, *net, *len))
            .map(|(_, _, what)| *what)
            .or_else(|| {
                (!in_v6(v6, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3))
                    .then_some("not global unicast")
            }),
    }
}

/// A connection the address policy stopped before any packet left. Its text
/// is the reason the deliveries list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRefused(pub String);

impl std::fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressRefused {}

/// Why a literal address in a URL's host may not take events, if it may not.
/// A host name passes here; it is checked when it is resolved.
pub fn refuse_literal(url: &reqwest::Url) -> Result<(), AddressRefused> {
    // The URL parser has already turned every spelling of an IPv4 address
    // (`2130706433`, `0x7f.1`) into dotted decimal, and IPv6 into brackets.
    let host = url.host_str().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = host.parse::<IpAddr>() else {
        return Ok(());
    };
    match special_purpose(ip) {
        None => Ok(()),
        Some(what) => Err(AddressRefused(format!(
            "{ip} is a special-purpose address ({what}), which webhooks may not reach"
        ))),
    }
}

/// Resolves host names like the system does, and refuses a name if any of
/// its addresses is special-purpose: no connection is attempted to it at all
/// (a name with one inward address among public ones is no receiver's
/// honest set-up, and it is how DNS rebinding would slip past).
#[derive(Debug, Default)]
pub struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.iter().any(|a| special_purpose(a.ip()).is_some()) {
                return Err(Box::new(AddressRefused(format!(
                    "{host} resolves to a special-purpose address, which webhooks may not reach"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<&'static str> {
        special_purpose(s.parse().unwrap())
    }

    #[test]
    fn every_special_purpose_ipv4_range_is_refused_edges_included() {
        for (ip, what) in [
            ("0.0.0.0", "\"this network\""),
            ("0.255.255.255", "\"this network\""),
            ("10.0.0.1", "private-use"),
            ("10.255.255.255", "private-use"),
            ("100.64.0.1", "shared address space"),
            ("100.127.255.255", "shared address space"),
            ("127.0.0.1", "loopback"),
            ("127.0.0.2", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.0", "link-local"),
            ("172.16.0.1", "private-use"),
            ("172.31.255.255", "private-use"),
            ("192.0.0.9", "IETF protocol assignments"),
            ("192.0.0.171", "IETF protocol assignments"),
            ("192.0.2.33", "documentation"),
            ("192.31.196.1", "AS112"),
            ("192.52.193.1", "AMT"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("192.168.1.1", "private-use"),
            ("192.175.48.6", "AS112"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
        ] {
            assert_eq!(kind(ip), Some(what), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_addresses_next_to_the_special_ranges_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "203.0.112.255",
            "223.255.255.255",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn every_special_purpose_ipv6_range_is_refused_edges_included() {
        for (ip, what) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "IPv4-mapped"),
            ("::ffff:8.8.8.8", "IPv4-mapped"),
            ("::ffff:169.254.169.254", "IPv4-mapped"),
            ("::10.0.0.1", "IPv4-compatible"),
            ("64:ff9b::a00:1", "NAT64"),
            ("64:ff9b::808:808", "NAT64"),
            ("64:ff9b:1::1", "NAT64"),
            ("100::1", "discard-only"),
            ("100:0:0:1::1", "dummy prefix"),
            ("2001::1", "IETF protocol assignments"),
            ("2001:2::1", "IETF protocol assignments"),
            ("2001:1ff:ffff::1", "IETF protocol assignments"),
            ("2001:db8::1", "documentation"),
            ("2002:a00:1::1", "6to4"),
            ("2620:4f:8000::1", "AS112"),
            ("3fff::1", "documentation"),
            ("3fff:fff::1", "documentation"),
            ("5f00::1", "SRv6 SIDs"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("ff0e::1", "multicast"),
            ("4000::1", "not global unicast"),
            ("1::1", "not global unicast"),
            ("::2:0:0:1", "not global unicast"),
            ("e000::1", "not global unicast"),
        ] {
            assert_eq!(kind(ip), Some(what), "{ip}");
        }
    }

    #[test]
    fn public_ipv6_addresses_pass() {
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2001:200::1",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "2003::1",
            "2620:4f:7fff::1",
            "2620:4f:8001::1",
            "3ffe::1",
            "3fff:1000::1",
            "2a00:1450::1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    fn literal(url: &str) -> Result<(), AddressRefused> {
        refuse_literal(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn literal_hosts_are_checked_in_every_spelling_and_names_are_left_for_later() {
        for url in [
            "http://10.0.0.1/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[::ffff:7f00:1]/",
            "http://100.64.0.1:8080/",
            "http://127.0.0.1:5432/",
            // The URL standard reads these as 127.0.0.1 and 10.0.0.1.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://012.0.0.1/",
            "https://[::1]:443/",
            "http://0/",
        ] {
            let refused = literal(url).expect_err(url);
            assert!(refused.0.contains("special-purpose"), "{url}: {refused}");
        }
        assert!(
            literal("http://10.0.0.1/")
                .unwrap_err()
                .0
                .starts_with("10.0.0.1 is a special-purpose address (private-use)")
        );
        for url in [
            "https://8.8.8.8/hook",
            "https://[2606:4700:4700::1111]/",
            "https://app.example.com/hook",
            "http://localhost:8080/",
        ] {
            assert_eq!(literal(url), Ok(()), "{url}");
        }
    }
}
