//! HTTP Digest authentication as SIP uses it (RFC 3261 section 22, RFC 2617, RFC 7616):
//! MD5 with `qop=auth` (client nonce and nonce count) or without qop, answering a 401's
//! `WWW-Authenticate` with `Authorization` and a 407's `Proxy-Authenticate` with
//! `Proxy-Authorization`.

use std::fmt;

use md5::{Digest as _, Md5};
use thiserror::Error;

/// A password. Its `Debug` prints `[redacted]`, so it can sit in logged configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A user name and password for a trunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The digest user name.
    pub username: String,
    /// The password.
    pub password: Password,
}

/// A parsed `Digest` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server nonce.
    pub nonce: String,
    /// Returned unchanged.
    pub opaque: Option<String>,
    /// `MD5` when absent.
    pub algorithm: Option<String>,
    /// The qop options offered, if any.
    pub qop: Vec<String>,
    /// The previous nonce was stale: retry with the new one even after a failed attempt.
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    /// The header is not a Digest challenge.
    #[error("not a Digest challenge: {0:?}")]
    NotDigest(String),
    /// `realm` or `nonce` is missing.
    #[error("Digest challenge lacks {0}")]
    Missing(&'static str),
    /// An algorithm other than MD5.
    #[error("unsupported Digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// qop offered without `auth` (only `auth-int`, say).
    #[error("unsupported Digest qop {0:?}")]
    UnsupportedQop(Vec<String>),
}

impl Challenge {
    /// Parses a `WWW-Authenticate` or `Proxy-Authenticate` value.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest(value.to_owned()));
        }
        let mut realm = None;
        let mut nonce = None;
        let mut challenge = Challenge {
            realm: String::new(),
            nonce: String::new(),
            opaque: None,
            algorithm: None,
            qop: Vec::new(),
            stale: false,
        };
        for (key, val) in auth_params(rest) {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(val),
                "nonce" => nonce = Some(val),
                "opaque" => challenge.opaque = Some(val),
                "algorithm" => challenge.algorithm = Some(val),
                "qop" => {
                    challenge.qop = val
                        .split(',')
                        .map(|q| q.trim().to_owned())
                        .filter(|q| !q.is_empty())
                        .collect();
                }
                "stale" => challenge.stale = val.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        challenge.realm = realm.ok_or(DigestError::Missing("realm"))?;
        challenge.nonce = nonce.ok_or(DigestError::Missing("nonce"))?;
        Ok(challenge)
    }

    /// The header value answering this challenge for a request `method uri`. With qop,
    /// `cnonce` and `nc` (1 for a first use of the nonce) go into the response.
    pub fn respond(
        &self,
        credentials: &Credentials,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> Result<String, DigestError> {
        if let Some(alg) = &self.algorithm
            && !alg.eq_ignore_ascii_case("MD5")
        {
            return Err(DigestError::UnsupportedAlgorithm(alg.clone()));
        }
        let qop_auth = if self.qop.is_empty() {
            false
        } else if self.qop.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
            true
        } else {
            return Err(DigestError::UnsupportedQop(self.qop.clone()));
        };
        let ha1 = md5_hex(&format!(
            "{}:{}:{}",
            credentials.username,
            self.realm,
            credentials.password.expose()
        ));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if qop_auth {
            md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            md5_hex(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\"",
            credentials.username, self.realm, self.nonce
        );
        if let Some(alg) = &self.algorithm {
            out.push_str(&format!(", algorithm={alg}"));
        }
        if qop_auth {
            out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{opaque}\""));
        }
        Ok(out)
    }
}

/// A fresh client nonce: 16 random bytes in hex.
pub fn new_cnonce() -> String {
    let bytes: [u8; 16] = rand::random();
    hex(&bytes)
}

fn md5_hex(input: &str) -> String {
    hex(&Md5::digest(input.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mufasa(password: &str) -> Credentials {
        Credentials {
            username: "Mufasa".into(),
            password: Password::new(password),
        }
    }

    #[test]
    fn rfc_2617_example_with_qop_auth() {
        // RFC 2617 section 3.5.
        let challenge = Challenge::parse(
            "Digest\r\n realm=\"testrealm@host.com\",\
             qop=\"auth,auth-int\",\
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(challenge.qop, ["auth", "auth-int"]);
        let header = challenge
            .respond(
                &mufasa("Circle Of Life"),
                "GET",
                "/dir/index.html",
                "0a4f113b",
                1,
            )
            .unwrap();
        assert_eq!(
            header,
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             response=\"6629fae49393a05397450978507c4ef1\", qop=auth, nc=00000001, \
             cnonce=\"0a4f113b\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""
        );
    }

    #[test]
    fn rfc_7616_md5_example() {
        // RFC 7616 section 3.9.1, the MD5 response.
        let challenge = Challenge::parse(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=MD5, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .unwrap();
        let header = challenge
            .respond(
                &mufasa("Circle of Life"),
                "GET",
                "/dir/index.html",
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                1,
            )
            .unwrap();
        assert!(
            header.contains("response=\"8ca523f5e9506fed4657c9700eebdbec\""),
            "{header}"
        );
        assert!(header.contains("algorithm=MD5"));
    }

    #[test]
    fn no_qop_uses_the_rfc_2069_response() {
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"",
        )
        .unwrap();
        let header = challenge
            .respond(
                &mufasa("Circle Of Life"),
                "GET",
                "/dir/index.html",
                "unused",
                1,
            )
            .unwrap();
        // MD5(HA1:nonce:HA2) with HA1 = MD5(Mufasa:testrealm@host.com:Circle Of Life) and
        // HA2 = MD5(GET:/dir/index.html), as `printf ... | md5sum` computes them.
        assert!(
            header.contains("response=\"670fd8c2df070c60b045671b8b24ff02\""),
            "{header}"
        );
        assert!(!header.contains("qop"));
        assert!(!header.contains("cnonce"));
    }

    #[test]
    fn unusable_challenges_are_named_errors() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest("Basic realm=\"x\"".into()))
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(DigestError::Missing("realm"))
        );
        let sha =
            Challenge::parse("Digest realm=r, nonce=n, algorithm=SHA-256, stale=TRUE").unwrap();
        assert!(sha.stale);
        assert_eq!(
            sha.respond(&mufasa("p"), "INVITE", "sip:x", "c", 1),
            Err(DigestError::UnsupportedAlgorithm("SHA-256".into()))
        );
        let int = Challenge::parse("Digest realm=r, nonce=n, qop=\"auth-int\"").unwrap();
        assert_eq!(
            int.respond(&mufasa("p"), "INVITE", "sip:x", "c", 1),
            Err(DigestError::UnsupportedQop(vec!["auth-int".into()]))
        );
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let c = Challenge::parse(r#"Digest realm="a, \"b\"", nonce="x,y""#).unwrap();
        assert_eq!(c.realm, "a, \"b\"");
        assert_eq!(c.nonce, "x,y");
    }

    #[test]
    fn password_debug_is_redacted() {
        let creds = mufasa("Circle Of Life");
        let shown = format!("{creds:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains("Circle"));
        assert_eq!(new_cnonce().len(), 32);
        assert_ne!(new_cnonce(), new_cnonce());
    }
}
