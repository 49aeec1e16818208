//! otpgate: a self-hosted one-time-password gateway that speaks the TingTing OTP
//! HTTP API.
//!
//! - [`config`]: layered configuration (defaults, TOML file, `OTPGATE_*` variables).
//! - [`startup`]: [`startup::Application`], built from a configuration and run until
//!   a shutdown future completes; `main` and the tests both use it.
//! - [`api`]: the HTTP routes, one router per feature, and the one error envelope.
//! - [`auth`]: API keys (format, hashing, constant-time checks, last-used tracking).
//! - [`users`]: users' passwords, login tokens and the admin token.
//! - [`codes`]: the keys codes are kept under at rest.
//! - [`retention`]: the `[retention]` settings and the purge of what is past them.
//! - [`outbox`]: the leased-outbox worker that deliveries and webhooks share.
//! - [`delivery`]: the delivery outbox of each channel and the channel
//!   [`delivery::Driver`] trait.
//! - [`guard`]: the SMS-pumping guard: bursts of unverified sends to one
//!   country, prefix or number block are held, and released by time or by
//!   an operator.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`server`]: the HTTP accept loop and its limits: slow or oversized requests,
//!   connections per server and per client address, trusted proxies.
//! - [`throttle`]: per-node limits on verifications and on concurrent lists.
//! - [`webhooks`]: signed event deliveries to each account's URL, with retries,
//!   and the sweep that reports codes expired unverified.
//! - [`backup`]: `otpgate backup` and `restore` of a SQLite store.
//! - [`control`]: run-time control: routes and limits replaced on `SIGHUP`,
//!   routes paused, resumed and drained.
//! - [`check`]: `otpgate check-config` (every problem of a file at once) and
//!   `otpgate doctor` (what a node needs, one line per check).
//! - [`accounts`]: account, credit, key and user operations, shared by the
//!   command line and the admin API.
//! - [`cli`]: the `otpgate` command line.
//!
//! Domain rules (numbers, codes, templates, segments, credits) live in `otp-domain`;
//! persistence in `otp-store`.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod backup;
pub mod check;
pub mod cli;
pub mod codes;
pub mod config;
pub mod console;
pub mod control;
pub mod delivery;
pub mod guard;
pub mod metrics;
pub mod outbox;
pub mod peer;
pub mod process;
pub mod retention;
pub mod server;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod times;
pub mod users;
pub mod webhooks;
