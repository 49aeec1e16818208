//! The integration suite: the real server on a real port, real SQLite files and
//! a real PostgreSQL server. Each test runs against both stores (through
//! `for_each_backend!`, in `helpers`), except the HTTP driver suite
//! (`http_drivers`), whose store only hands each driver its job.

mod helpers;

mod abuse;
mod account_fallback;
mod account_rules;
mod admin;
mod auth;
mod cli;
mod concurrency;
mod conformance;
mod console;
mod console_account;
mod console_ops;
mod control;
mod delivery;
mod dotnet_client;
mod durability;
mod edge;
mod fallback;
mod guard;
mod http_drivers;
mod limits;
mod list;
mod logins;
mod neighbours;
mod observability;
mod ops;
mod php_client;
mod production;
mod pypi_client;
mod resends;
mod retention;
mod routing;
mod scopes;
mod send;
mod smpp_settings;
mod smsc;
mod smsc_peers;
mod stats;
mod tingting_compat;
mod upgrades;
mod users;
mod verify;
mod voice;
mod webhooks;
