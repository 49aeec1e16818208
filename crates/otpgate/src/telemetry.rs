//! Structured logs through `tracing`, as text or JSON lines on stderr.
//!
//! Nothing secret is ever put in a field: handlers log ids, routes and outcomes,
//! never OTP values, keys, message text or full query strings.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber; `RUST_LOG`, when set, overrides the level.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if config.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A subscriber already installed (tests) is fine.
    let _ = result;
}
