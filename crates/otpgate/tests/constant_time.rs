//! Every secret is compared in constant time.
//!
//! A timing measurement in a test would be flaky on a shared machine, so this
//! checks the code instead: each place that decides whether a presented secret
//! is right must go through a constant-time primitive (`subtle`'s `ct_eq`, the
//! MAC's `verify_slice`, argon2's verifier), and no `==`/`!=` may touch a
//! secret-looking value anywhere else. A new comparison of a secret with `==`
//! fails this test until it is rewritten (or, if it compares public data,
//! listed below with the reason).

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The body of `fn name` in `source` (up to the next line starting `}` at its
/// indentation).
fn function<'a>(source: &'a str, name: &str) -> &'a str {
    let start = source
        .find(&format!("fn {name}"))
        .unwrap_or_else(|| panic!("fn {name} not found"));
    let rest = &source[start..];
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = source[line_start..]
        .chars()
        .take_while(|c| *c == ' ')
        .count();
    let close = format!("\n{}}}", " ".repeat(indent));
    let end = rest.find(&close).unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn each_secret_check_uses_a_constant_time_primitive() {
    let checks = [
        // (file, function, what it must use, the secret)
        ("crates/otpgate/src/auth.rs", "verify", "ct_eq", "API keys"),
        (
            "crates/otpgate/src/users.rs",
            "is_admin_token",
            "ct_eq",
            "the admin token",
        ),
        (
            "crates/otpgate/src/users/tokens.rs",
            "check",
            "verify_slice",
            "token signatures",
        ),
        (
            "crates/otpgate/src/users/hashing.rs",
            "verify_now",
            "verify_password",
            "passwords",
        ),
        (
            "crates/otp-domain/src/vault.rs",
            "matches",
            "ct_eq",
            "OTP codes at rest",
        ),
        (
            "crates/otp-domain/src/code.rs",
            "matches",
            "ct_eq",
            "OTP codes in memory",
        ),
    ];
    for (file, name, primitive, secret) in checks {
        let source = read(file);
        let body = function(&source, name);
        assert!(
            body.contains(primitive),
            "{secret}: {file} fn {name} no longer uses {primitive}"
        );
    }
}

#[test]
fn no_secret_is_compared_with_eq_or_ne() {
    // Comparisons of public values whose names look secret, and why they are fine.
    const PUBLIC: [&str; 7] = [
        "header != B64URL.encode(HEADER)", // the fixed JWT header, public
        "claims.token_type == kind",       // the token's kind, after the MAC check
        "secret.len() == 43",              // the shape of a key, not its value
        "access_token_seconds == 0",       // a setting
        "*hash != key.body_hash",          // idempotency body hashes, not secrets
        "hash == key.body_hash",           // the same, in the send's replay check
        "refresh_token_seconds == 0",      // a setting
    ];
    let mut found = Vec::new();
    for dir in [
        "crates/otpgate/src",
        "crates/otp-domain/src",
        "crates/otp-store/src",
        "crates/smpp/src",
    ] {
        for file in rust_files(&workspace().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests may compare freely.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if !(code.contains("==") || code.contains("!=")) {
                    continue;
                }
                if code
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(secretish)
                    && !PUBLIC.iter().any(|p| code.contains(p))
                {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "compare these in constant time, or list them as public with a reason:\n{}",
        found.join("\n")
    );
}

/// Whether an identifier names a secret (or something made from one).
fn secretish(ident: &str) -> bool {
    let id = ident.to_lowercase();
    ["secret", "password", "signature", "cipher", "digest"]
        .iter()
        .any(|w| id.contains(w))
        || ["hash", "token", "mac"].contains(&id.as_str())
        || ["_hash", "_token", "_mac", "_otp"]
            .iter()
            .any(|w| id.ends_with(w))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}
