//! Structured logs through `tracing`, as text or JSON lines on stderr.
//!
//! Nothing secret is ever put in a field: handlers log ids, routes and outcomes,
//! never OTP values, keys, message text or full query strings. Nothing a client
//! sends is a field as it is either: the request span carries the method as its
//! bounded metric label, the path escaped (`?`), and a request id that passed
//! the safe-charset check in `api::drop_unsafe_request_id` or was generated.
//! Each request's access line (`api::observe`, target `otpgate::access`) is
//! logged outside that span, with the route template in place of the path.
//! Colours only on a terminal (see [`init`]), so piped and collected logs carry
//! no escape codes.

use std::io::IsTerminal;

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Swaps the filter of the installed subscriber (its type differs between
/// the text and JSON formats, hence a closure).
type SwapFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Set by [`init`] when it installed the subscriber.
static SWAP_FILTER: OnceLock<SwapFilter> = OnceLock::new();

/// Installs the global subscriber; `RUST_LOG`, when set, overrides the level.
pub fn init(config: &LogConfig) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = env_filter(rust_log.as_deref(), &config.level);
    let no_color = std::env::var_os("NO_COLOR");
    let ansi = colours(std::io::stderr().is_terminal(), no_color.as_deref());
    // Installs `$builder` with a reloadable filter and keeps the way to swap
    // it; the text and JSON builders are different types, hence a macro.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            // A subscriber already installed (tests) is fine: errors are ignored.
            if builder.try_init().is_ok() {
                let _ = SWAP_FILTER.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }};
    }
    if config.format == "json" {
        install!(tracing_subscriber::fmt().json().flatten_event(true));
    } else {
        install!(tracing_subscriber::fmt());
    }
}

/// Puts `level` (a new `log.level`) in force without a restart, quieted like
/// at start; `RUST_LOG`, when set, still wins. Returns the filter now in force.
/// An invalid level is an error and changes nothing.
pub fn reload_level(level: &str) -> Result<String, String> {
    EnvFilter::try_new(with_quiet_drivers(level))
        .map_err(|e| format!("log.level {level:?} is not a valid filter: {e}"))?;
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = env_filter(rust_log.as_deref(), level);
    let shown = filter.to_string();
    match SWAP_FILTER.get() {
        Some(swap) => swap(filter).map(|()| shown),
        None => Err("this process installed no reloadable log subscriber".into()),
    }
}

/// Whether text lines get ANSI colours: only on a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org). A pipe, a
/// file or journald gets plain text, whatever `TERM` says.
fn colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The filter of [`init`]: `rust_log` (the `RUST_LOG` variable) when it is set
/// and valid, else `level` (`log.level`), else `info`; whichever it is, the
/// database drivers are held at `info` ([`with_quiet_drivers`]). Before, a
/// `RUST_LOG=debug` skipped that and logged every PostgreSQL statement's
/// parameters.
pub fn env_filter(rust_log: Option<&str>, level: &str) -> EnvFilter {
    rust_log
        .filter(|l| !l.trim().is_empty())
        .and_then(|l| EnvFilter::try_new(with_quiet_drivers(l)).ok())
        .or_else(|| EnvFilter::try_new(with_quiet_drivers(level)).ok())
        .unwrap_or_else(|| EnvFilter::new(with_quiet_drivers("info")))
}

/// The database drivers log each statement with its parameters at debug level
/// (password hashes, webhook URLs, numbers): a configured `debug` or `trace`
/// stops at `info` for them unless the level names them itself.
fn with_quiet_drivers(level: &str) -> String {
    let mut filter = level.to_owned();
    for driver in ["tokio_postgres", "postgres_protocol", "rusqlite"] {
        if !level.contains(driver) {
            filter.push_str(&format!(",{driver}=info"));
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::with_quiet_drivers;

    #[test]
    fn database_drivers_stay_at_info_unless_named() {
        assert_eq!(
            with_quiet_drivers("debug"),
            "debug,tokio_postgres=info,postgres_protocol=info,rusqlite=info"
        );
        let named = with_quiet_drivers("debug,tokio_postgres=trace");
        assert!(named.contains("tokio_postgres=trace") && !named.contains("tokio_postgres=info"));
        assert!(tracing_subscriber::EnvFilter::try_new(with_quiet_drivers("info")).is_ok());
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use super::colours;
        use std::ffi::OsStr;
        assert!(colours(true, None));
        assert!(colours(true, Some(OsStr::new(""))));
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None));
    }

    #[test]
    fn rust_log_is_quieted_like_the_configured_level() {
        use super::env_filter;
        for (rust_log, level) in [
            (Some("debug"), "info"),
            (Some("trace"), "info"),
            (None, "debug"),
            (Some(""), "debug"),
            (Some("not a [filter"), "debug"),
        ] {
            let shown = env_filter(rust_log, level).to_string();
            assert!(
                shown.contains("tokio_postgres=info") && shown.contains("postgres_protocol=info"),
                "{rust_log:?} / {level}: {shown}"
            );
        }
    }
}
