//! Access and refresh tokens: JSON Web Tokens signed with HMAC-SHA256.
//!
//! The claims follow djangorestframework-simplejwt, which TingTing clients
//! know: `token_type` (`access` or `refresh`), `user_id`, `iat`, `exp` (Unix
//! seconds) and `jti` (16 random bytes, hex); `ver` is the user's session
//! version, so changing the password ends every token issued before; `sid` is
//! the login (session) the token belongs to: the refresh token a login issues
//! and every access token refreshed from it carry the same `sid`, and a token
//! is accepted only while that session is neither revoked (logout, password
//! reset) nor expired (checked by the caller, in the store). A token is
//! accepted only with our exact header (`{"alg":"HS256","typ":"JWT"}`), a
//! signature that checks (compared in constant time), the expected
//! `token_type` and an `exp` in the future: a refresh token is not an access
//! token, and nothing of another kind (an API key, a token of another
//! issuer) parses as one. Tokens themselves are not stored (only their
//! session); a refresh does not rotate the refresh token. Tokens from before
//! sessions existed have no `sid` and are refused: users log in again once.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use otp_store::User;

/// The only header we issue or accept.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
/// Longer input is not looked at.
const MAX_TOKEN_LEN: usize = 2048;

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Refresh,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub token_type: TokenKind,
    pub user_id: i64,
    pub ver: i64,
    pub sid: i64,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// A token and when it ends (Unix seconds).
pub struct Issued {
    pub token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Signs and checks tokens with one key.
pub struct Tokens {
    key: Vec<u8>,
    access_seconds: i64,
    refresh_seconds: i64,
}

impl Tokens {
    pub fn new(key: Vec<u8>, access_seconds: u64, refresh_seconds: u64) -> Tokens {
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX / 2);
        Tokens {
            key,
            access_seconds: secs(access_seconds),
            refresh_seconds: secs(refresh_seconds),
        }
    }

    /// How long a token of this kind lasts, in seconds.
    pub fn lifetime(&self, kind: TokenKind) -> i64 {
        match kind {
            TokenKind::Access => self.access_seconds,
            TokenKind::Refresh => self.refresh_seconds,
        }
    }

    /// A new token of `kind` for `user` in session `sid`, issued at `now`
    /// (Unix seconds).
    pub fn issue(&self, kind: TokenKind, user: &User, sid: i64, now: i64) -> Issued {
        let mut jti = [0u8; 16];
        OsRng
            .try_fill_bytes(&mut jti)
            .expect("the operating system's random source failed");
        let claims = Claims {
            token_type: kind,
            user_id: user.id,
            ver: user.session_version,
            sid,
            iat: now,
            exp: now.saturating_add(self.lifetime(kind)),
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
        };
        let payload = serde_json::to_vec(&claims).expect("claims serialize");
        let signing_input = format!("{}.{}", B64URL.encode(HEADER), B64URL.encode(payload));
        let signature = B64URL.encode(self.mac(&signing_input).finalize().into_bytes());
        Issued {
            token: format!("{signing_input}.{signature}"),
            expires_at: claims.exp,
        }
    }

    /// The claims of a valid, unexpired token of `kind`; `None` for anything
    /// else, without saying why (callers answer one 401 for all of it).
    pub fn check(&self, token: &str, kind: TokenKind, now: i64) -> Option<Claims> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        if header != B64URL.encode(HEADER) {
            return None;
        }
        let signature = B64URL.decode(signature).ok()?;
        // `verify_slice` compares in constant time.
        self.mac(signing_input).verify_slice(&signature).ok()?;
        let claims: Claims = serde_json::from_slice(&B64URL.decode(payload).ok()?).ok()?;
        (claims.token_type == kind && claims.exp > now).then_some(claims)
    }

    fn mac(&self, input: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(input.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 7,
            account_id: 3,
            email: "ana@example.com".into(),
            password_hash: String::new(),
            session_version: 2,
            created_at: 0,
            password_changed_at: 0,
            operator: false,
        }
    }

    fn tokens() -> Tokens {
        Tokens::new(vec![9; 32], 86_400, 604_800)
    }

    #[test]
    fn an_issued_token_checks_as_its_own_kind_only() {
        let t = tokens();
        let access = t.issue(TokenKind::Access, &user(), 5, 1_000);
        assert_eq!(access.expires_at, 1_000 + 86_400);
        let claims = t.check(&access.token, TokenKind::Access, 1_001).unwrap();
        assert_eq!((claims.user_id, claims.ver, claims.sid), (7, 2, 5));
        assert!(t.check(&access.token, TokenKind::Refresh, 1_001).is_none());
        let refresh = t.issue(TokenKind::Refresh, &user(), 5, 1_000);
        assert_eq!(refresh.expires_at, 1_000 + 604_800);
        assert!(t.check(&refresh.token, TokenKind::Access, 1_001).is_none());
        assert!(t.check(&refresh.token, TokenKind::Refresh, 1_001).is_some());
    }

    #[test]
    fn expired_forged_or_foreign_tokens_do_not_check() {
        let t = tokens();
        let access = t.issue(TokenKind::Access, &user(), 5, 1_000).token;
        assert!(
            t.check(&access, TokenKind::Access, 1_000 + 86_400)
                .is_none()
        );
        let other = Tokens::new(vec![8; 32], 86_400, 604_800);
        assert!(other.check(&access, TokenKind::Access, 1_001).is_none());
        // A payload changed under the old signature.
        let (head, rest) = access.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!(
            "{head}.{}.{sig}",
            B64URL.encode(
                r#"{"token_type":"access","user_id":1,"ver":2,"sid":5,"iat":1000,"exp":99999999999,"jti":"x"}"#
            )
        );
        assert!(t.check(&forged, TokenKind::Access, 1_001).is_none());
        // alg "none" with no signature.
        let none = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#),
            rest.split_once('.').unwrap().0
        );
        assert!(t.check(&none, TokenKind::Access, 1_001).is_none());
        // A token signed with our key but from before sessions (no `sid`).
        let payload = B64URL.encode(
            r#"{"token_type":"access","user_id":7,"ver":2,"iat":1000,"exp":99999999999,"jti":"x"}"#,
        );
        let input = format!("{}.{payload}", B64URL.encode(HEADER));
        let old = format!(
            "{input}.{}",
            B64URL.encode(t.mac(&input).finalize().into_bytes())
        );
        assert!(t.check(&old, TokenKind::Access, 1_001).is_none());
        for garbage in ["", "a.b", "a.b.c", "otpg_abcdefghijkm_x", &"x".repeat(5000)] {
            assert!(t.check(garbage, TokenKind::Access, 1_001).is_none());
        }
    }
}
