//! The `otpgate` command line: `serve` (which reloads its configuration on
//! `SIGHUP`), `migrate`, `backup`, `restore`, `check-config`, `doctor`,
//! `routes` (pause, drain, resume through the admin API), `guard` (list and
//! release pumping holds, in the store), and the account, credit, key, user,
//! template and sender administration commands. Every command reads the same configuration as
//! `serve`, so `--database-url` or `OTPGATE_DATABASE_URL` points them all at one
//! store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use otp_domain::channel::Voice;
use otp_domain::message::MessageTemplate;
use otp_domain::sender::SenderId;
use otp_store::{Account, AccountFallback, Scopes, SharedStore};

use crate::accounts::{self, AccountName, CreditChange, Label, Refusal};
use crate::config::{Config, Secret};
use crate::startup::{Application, open_store};
use crate::users::hashing::hash_now;
use crate::users::{Email, NewPassword, PasswordRules};

#[derive(Parser)]
#[command(
    name = "otpgate",
    version,
    about = "Self-hosted OTP gateway (TingTing-compatible API)"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// TOML configuration file.
    #[arg(long, global = true, env = "OTPGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://... (overrides the configuration).
    #[arg(long, global = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the delivery workers.
    Serve {
        /// Address to listen on (overrides the configuration), e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(AccountsCmd),
    /// Manage credits.
    #[command(subcommand)]
    Credits(CreditsCmd),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage users (they log in to manage their account's API key).
    #[command(subcommand)]
    Users(UsersCmd),
    /// Manage accounts' webhooks (URL and signing secret).
    #[command(subcommand)]
    Webhooks(WebhooksCmd),
    /// Manage accounts' approved message templates: an account with any may
    /// send only those texts (whitespace aside).
    #[command(subcommand)]
    Templates(TemplatesCmd),
    /// Manage accounts' own sender IDs per route.
    #[command(subcommand)]
    Senders(SendersCmd),
    /// Copy the SQLite database to FILE while the service runs (consistent,
    /// checked); for PostgreSQL use pg_dump.
    Backup {
        /// A new file.
        file: PathBuf,
    },
    /// Put a backup made by `otpgate backup` in place of the SQLite database.
    /// Stop every otpgate using it first.
    Restore {
        file: PathBuf,
        /// Overwrite an existing database.
        #[arg(long)]
        replace: bool,
    },
    /// Check a configuration file and report every problem in it at once
    /// (exit 1 when there is one); connects to nothing.
    CheckConfig {
        /// The TOML file (the OTPGATE_* variables of the environment apply on top).
        file: PathBuf,
    },
    /// Check what this node needs to serve, one line per check (exit 1 when
    /// one fails): configuration, store, secrets, espeak-ng, each SMSC, clock.
    Doctor,
    /// List, pause, drain or resume the carrier routes of a running server,
    /// through its admin API (admin.token and the admin listener of the
    /// configuration).
    #[command(subcommand)]
    Routes(RoutesCmd),
    /// List or release the SMS-pumping guard's holds (in the store: a
    /// release reaches every node within guard.refresh_ms).
    #[command(subcommand)]
    Guard(GuardCmd),
}

#[derive(Subcommand)]
enum GuardCmd {
    /// Show the holds standing, and those ended or released within a hold's time.
    List {
        /// Print each hold as a JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Release a standing hold: its sends pass again.
    Release { id: i64 },
}

#[derive(Subcommand)]
enum RoutesCmd {
    /// Show each route, its state and deliveries in flight.
    List(AdminTarget),
    /// Stop a route taking messages; other routes of its numbers take over.
    Pause {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Let a route finish what it has in flight, then pause it.
    Drain {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Let a paused or draining route take messages again.
    Resume {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Where the running server's admin API is.
#[derive(Args)]
struct AdminTarget {
    /// Base URL of the admin API, e.g. http://127.0.0.1:9091. Default: the
    /// configured admin listener (or the public one when there is none).
    #[arg(long)]
    admin_url: Option<String>,
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AccountsCmd {
    /// Create an account and its first API key.
    Create {
        name: String,
        #[arg(long, default_value_t = 0)]
        sms_credits: i64,
        #[arg(long, default_value_t = 0)]
        phone_credits: i64,
        /// What the first key may do: some of send, verify, read, account,
        /// separated by commas.
        #[arg(long, default_value = "send,verify,read", value_parser = parse_scopes)]
        scopes: Scopes,
        /// Print one JSON object with account_id and api_key.
        #[arg(long)]
        json: bool,
    },
    /// List accounts and balances.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show or set an account's own send rate and daily spend cap. Without a
    /// flag, shows them; a number sets one (0: no limit for this account),
    /// `default` goes back to the `[limits]` configuration.
    Limits {
        /// Account id or name.
        account: String,
        /// Most accepted sends per second.
        #[arg(long, value_parser = parse_limit, allow_negative_numbers = true)]
        max_rps: Option<LimitSetting>,
        /// Most credits (SMS and phone together) per day.
        #[arg(long, value_parser = parse_limit, allow_negative_numbers = true)]
        daily_spend_cap: Option<LimitSetting>,
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: its API keys and users are refused and it
    /// accepts no send (what it accepted before is still delivered).
    Disable {
        /// Account id or name.
        account: String,
    },
    /// Enable an account that was disabled.
    Enable {
        /// Account id or name.
        account: String,
    },
    /// Show or set an account's default fallback call: what its text sends
    /// that do not give `fallback_channel` get (a send's own
    /// `fallback_channel` wins). Without a flag, shows it.
    Fallback {
        /// Account id or name.
        account: String,
        /// `voice` to set a default call (with --voice), `none` to clear it.
        #[arg(long, value_parser = ["voice", "none"])]
        channel: Option<String>,
        /// With --channel voice: seconds to wait for the verification
        /// before calling, 10-3600 (default 60).
        #[arg(long, requires = "channel")]
        after: Option<i64>,
        /// With --channel voice (required): the voice reading the code,
        /// np_rija, np_prashanna, np_shreegya or np_binod.
        #[arg(long, requires = "channel", value_parser = parse_voice)]
        voice: Option<Voice>,
        #[arg(long)]
        json: bool,
    },
}

/// `--voice`: a voice's name.
fn parse_voice(text: &str) -> Result<Voice, String> {
    Voice::parse(text.trim())
        .ok_or_else(|| "expected np_rija, np_prashanna, np_shreegya or np_binod".into())
}

/// A limit as given on the command line: a number, or `default`.
#[derive(Clone, Copy, Debug)]
struct LimitSetting(Option<i64>);

fn parse_limit(s: &str) -> Result<LimitSetting, String> {
    if s == "default" {
        return Ok(LimitSetting(None));
    }
    match s.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(LimitSetting(Some(n))),
        _ => Err("expected a whole number of at least 0, or `default`".into()),
    }
}

#[derive(Subcommand)]
enum CreditsCmd {
    /// Add credits (negative numbers remove them); recorded in the ledger.
    Add {
        /// Account id or name.
        account: String,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        sms: i64,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        phone: i64,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Issue a new key for an account (printed once).
    Create {
        /// Account id or name.
        account: String,
        #[arg(long)]
        label: Option<String>,
        /// What the key may do: some of send, verify, read, account, separated
        /// by commas.
        #[arg(long, default_value = "send,verify,read", value_parser = parse_scopes)]
        scopes: Scopes,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Only this account (id or name).
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (the part after `otpg_`) or the whole key.
    Revoke { key: String },
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::CheckConfig { file } = &cli.command {
        return check_config(file);
    }
    let loaded = Config::load(cli.global.config.as_deref());
    if let Command::Doctor = &cli.command {
        return doctor(loaded, &cli.global).await;
    }
    let mut config = loaded?;
    if let Some(url) = cli.global.database_url.clone() {
        config.database_url = Secret::new(url);
    }
    crate::telemetry::init(&config.log);
    match cli.command {
        Command::Serve { listen } => {
            if let Some(l) = listen.clone() {
                config.listen = l;
            }
            let reload = ReloadSource {
                file: cli.global.config.clone(),
                database_url: cli.global.database_url.clone(),
                listen,
            };
            serve(config, reload).await
        }
        Command::Migrate => {
            open_store(&config).await?;
            println!("migrations applied to {}", config.database_for_logs());
            Ok(())
        }
        Command::Accounts(cmd) => accounts(&open_store(&config).await?, cmd).await,
        Command::Credits(CreditsCmd::Add {
            account,
            sms,
            phone,
        }) => {
            let change = CreditChange::new(sms, phone)?;
            let store = open_store(&config).await?;
            let a = find_account(&store, &account).await?;
            let note = Label::ours("added with otpgate credits add");
            let a = accounts::add_credits(&store, a.id, change, note).await?;
            println!(
                "account {} ({}): {} SMS credits, {} phone credits",
                a.id, a.name, a.sms_credits, a.phone_credits
            );
            Ok(())
        }
        Command::Keys(cmd) => keys(&open_store(&config).await?, cmd).await,
        Command::Users(cmd) => users(&config, cmd).await,
        Command::Webhooks(cmd) => webhooks(&config, cmd).await,
        Command::Templates(cmd) => templates(&open_store(&config).await?, cmd).await,
        Command::Senders(cmd) => senders(&config, cmd).await,
        Command::Backup { file } => {
            tokio::task::spawn_blocking(move || crate::backup::backup(&config, &file)).await?
        }
        Command::Restore { file, replace } => {
            tokio::task::spawn_blocking(move || crate::backup::restore(&config, &file, replace))
                .await?
        }
        Command::Routes(cmd) => routes(&config, cmd).await,
        Command::Guard(cmd) => guard(&config, cmd).await,
        Command::CheckConfig { .. } | Command::Doctor => unreachable!("handled above"),
    }
}

/// `otpgate check-config FILE`: every problem, one a line, then how many.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let problems = crate::check::check_file(file);
    for p in &problems {
        println!("problem: {p}");
    }
    match problems.len() {
        0 => {
            println!("{}: no problems", file.display());
            Ok(())
        }
        n => anyhow::bail!(
            "{}: {n} problem{}",
            file.display(),
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// `otpgate doctor`: one line per check, exit 1 when one fails.
async fn doctor(loaded: anyhow::Result<Config>, global: &Global) -> anyhow::Result<()> {
    let source = global
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the defaults and OTPGATE_* variables".into());
    let mut config = match loaded {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL config: {}", format!("{e:#}").replace('\n', " "));
            anyhow::bail!("the configuration does not read; fix it first (otpgate check-config)");
        }
    };
    if let Some(url) = global.database_url.clone() {
        config.database_url = Secret::new(url);
    }
    let findings = crate::check::doctor(&config, &source).await;
    for f in &findings {
        println!("{f}");
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    anyhow::ensure!(failed == 0, "{failed} of {} checks failed", findings.len());
    Ok(())
}

/// `otpgate routes ...`: the admin API of the running server.
async fn routes(config: &Config, cmd: RoutesCmd) -> anyhow::Result<()> {
    let (target, path) = match &cmd {
        RoutesCmd::List(t) => (t, "/admin/v1/routes/".to_owned()),
        RoutesCmd::Pause { name, target } => (target, route_path(name, "pause")),
        RoutesCmd::Drain { name, target } => (target, route_path(name, "drain")),
        RoutesCmd::Resume { name, target } => (target, route_path(name, "resume")),
    };
    let token = config
        .admin
        .token
        .as_ref()
        .context("admin.token is not set: the admin API is off")?;
    let base = match &target.admin_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let address = crate::startup::admin_address(config).unwrap_or(config.listen.clone());
            format!("http://{address}")
        }
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let request = match cmd {
        RoutesCmd::List(_) => client.get(format!("{base}{path}")),
        _ => client.post(format!("{base}{path}")),
    };
    let reply = request
        .bearer_auth(token.expose().trim())
        .send()
        .await
        .with_context(|| format!("reaching the admin API at {base}"))?;
    let status = reply.status();
    let body: serde_json::Value = reply
        .json()
        .await
        .with_context(|| format!("reading the admin API's reply ({status})"))?;
    if !status.is_success() {
        anyhow::bail!(
            "the admin API answered {status}: {}",
            body["message"].as_str().unwrap_or("(no message)")
        );
    }
    if target.json {
        println!("{}", body["data"]);
        return Ok(());
    }
    let rows = match &body["data"] {
        serde_json::Value::Array(rows) => rows.clone(),
        one => vec![one.clone()],
    };
    for r in rows {
        println!(
            "{} ({}, {}): {}, {} in flight",
            r["name"].as_str().unwrap_or(""),
            r["channel"].as_str().unwrap_or(""),
            r["driver"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["in_flight"]
        );
    }
    Ok(())
}

/// The admin path of one route, its name escaped.
fn route_path(name: &str, action: &str) -> String {
    let escaped: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("/admin/v1/routes/{escaped}/{action}/")
}

/// Where a reload reads the configuration from: the same file, with the same
/// command-line overrides as at start.
struct ReloadSource {
    file: Option<PathBuf>,
    database_url: Option<String>,
    listen: Option<String>,
}

impl ReloadSource {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.file.as_deref())?;
        if let Some(url) = &self.database_url {
            config.database_url = Secret::new(url.clone());
        }
        if let Some(l) = &self.listen {
            config.listen = l.clone();
        }
        Ok(config)
    }
}

/// Reloads the configuration at each `SIGHUP` (see `crate::control`).
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    state: crate::state::AppState,
    source: ReloadSource,
) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let result = match source.load() {
            Ok(config) => crate::startup::reload(&state, config).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(done) => tracing::info!(applied = %done, "configuration reloaded"),
            Err(e) => tracing::error!(
                error = %format!("{e:#}"),
                "configuration reload refused; the running configuration is kept"
            ),
        }
    }
}

async fn serve(config: Config, reload: ReloadSource) -> anyhow::Result<()> {
    // Taken before anything else: a SIGHUP's default action ends the process.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP (configuration reloads)")?;
    let app = Application::build(config).await?;
    if let Some(key) = app.first_key() {
        // Printed once, on the console only; it is never logged.
        println!(
            "Created account \"default\" with demo credits. Its API key (shown only now):\n\n    {key}\n"
        );
    }
    println!("otpgate listening on http://{}", app.local_addr());
    #[cfg(unix)]
    tokio::spawn(reload_on_hangup(hangups, app.state().clone(), reload));
    #[cfg(not(unix))]
    drop(reload);
    app.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn find_account(store: &SharedStore, which: &str) -> anyhow::Result<Account> {
    let found = match which.parse::<i64>() {
        Ok(id) => store.account(id).await?,
        Err(_) => store.account_by_name(which).await?,
    };
    found.with_context(|| format!("no account {which:?}"))
}

async fn accounts(store: &SharedStore, cmd: AccountsCmd) -> anyhow::Result<()> {
    match cmd {
        AccountsCmd::Create {
            name,
            sms_credits,
            phone_credits,
            scopes,
            json,
        } => {
            let name = AccountName::parse(&name)?;
            let sms = accounts::opening_credits("sms_credits", sms_credits)?;
            let phone = accounts::opening_credits("phone_credits", phone_credits)?;
            let (account, key) = accounts::create_account(store, &name, sms, phone, scopes).await?;
            if json {
                println!(
                    "{}",
                    json!({ "account_id": account.id, "name": account.name, "api_key": key.api_key })
                );
            } else {
                println!("account_id: {}\napi_key: {}", account.id, key.api_key);
            }
        }
        AccountsCmd::Limits {
            account,
            max_rps,
            daily_spend_cap,
            json,
        } => {
            let a = find_account(store, &account).await?;
            let limits = accounts::set_limits(
                store,
                a.id,
                max_rps.map(|s| s.0),
                daily_spend_cap.map(|s| s.0),
            )
            .await
            .map_err(|e| match e {
                Refusal::NotFound => anyhow::anyhow!("no account {account:?}"),
                other => other.into(),
            })?;
            if json {
                println!(
                    "{}",
                    json!({ "account_id": a.id, "max_rps": limits.max_rps,
                            "daily_spend_cap": limits.daily_spend_cap })
                );
            } else {
                let show = |v: Option<i64>| match v {
                    None => "default".to_owned(),
                    Some(0) => "0 (no limit)".to_owned(),
                    Some(n) => n.to_string(),
                };
                println!(
                    "account {} ({}): max_rps {}, daily_spend_cap {}",
                    a.id,
                    a.name,
                    show(limits.max_rps),
                    show(limits.daily_spend_cap)
                );
            }
        }
        AccountsCmd::Disable { account } => set_disabled(store, &account, true).await?,
        AccountsCmd::Enable { account } => set_disabled(store, &account, false).await?,
        AccountsCmd::Fallback {
            account,
            channel,
            after,
            voice,
            json,
        } => default_fallback(store, &account, channel.as_deref(), after, voice, json).await?,
        AccountsCmd::List { json } => {
            let list = store.list_accounts().await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|a| {
                        json!({ "account_id": a.id, "name": a.name, "sms_credits": a.sms_credits,
                                "phone_credits": a.phone_credits, "otps": a.otp_count,
                                "disabled": a.disabled_at.is_some() })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:>6}  {:<24} {:>12} {:>14} {:>10}",
                    "id", "name", "sms_credits", "phone_credits", "otps"
                );
                for a in list {
                    println!(
                        "{:>6}  {:<24} {:>12} {:>14} {:>10}{}",
                        a.id,
                        a.name,
                        a.sms_credits,
                        a.phone_credits,
                        a.otp_count,
                        if a.disabled_at.is_some() {
                            "  disabled"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

/// `accounts fallback`: sets the default when `channel` is given, then
/// prints it.
async fn default_fallback(
    store: &SharedStore,
    account: &str,
    channel: Option<&str>,
    after: Option<i64>,
    voice: Option<Voice>,
    json: bool,
) -> anyhow::Result<()> {
    let mut a = find_account(store, account).await?;
    let default = match (channel, voice) {
        (None, _) => None,
        (Some("none"), None) if after.is_none() => Some(None),
        (Some("none"), _) => anyhow::bail!("--after and --voice go with --channel voice"),
        (Some(_), None) => anyhow::bail!("--voice is required with --channel voice"),
        (Some(_), Some(voice)) => {
            let after = after.unwrap_or(otp_store::fallback::DEFAULT_AFTER_SECONDS);
            Some(Some(
                AccountFallback::new(voice, after).map_err(|e| anyhow::anyhow!("--after: {e}"))?,
            ))
        }
    };
    if let Some(default) = default {
        a = store
            .set_account_fallback(a.id, default)
            .await?
            .with_context(|| format!("no account {account:?}"))?;
    }
    if json {
        println!(
            "{}",
            json!({
                "account_id": a.id,
                "fallback_channel": if a.fallback.is_some() { "voice" } else { "none" },
                "fallback_after_seconds": a.fallback.map(|d| d.after_seconds),
                "fallback_voice_input": a.fallback.map(|d| d.voice.as_str()),
            })
        );
    } else {
        match a.fallback {
            Some(d) => println!(
                "account {} ({}): default fallback: a voice call after {} seconds, read by {}",
                a.id,
                a.name,
                d.after_seconds,
                d.voice.as_str()
            ),
            None => println!("account {} ({}): no default fallback", a.id, a.name),
        }
    }
    Ok(())
}

/// `accounts disable` / `accounts enable`.
async fn set_disabled(store: &SharedStore, account: &str, disabled: bool) -> anyhow::Result<()> {
    let a = find_account(store, account).await?;
    let a = accounts::set_disabled(store, a.id, disabled).await?;
    let state = if a.disabled_at.is_some() {
        "disabled"
    } else {
        "enabled"
    };
    println!("account {} ({}): {state}", a.id, a.name);
    Ok(())
}

#[derive(Subcommand)]
enum TemplatesCmd {
    /// Print an account's approved templates, one a line (none: any text).
    List {
        /// Account id or name.
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a template (it must hold {otp}); kept normalized.
    Add {
        /// Account id or name.
        account: String,
        text: String,
    },
    /// Withdraw an approved template (whitespace aside).
    Remove {
        /// Account id or name.
        account: String,
        text: String,
    },
    /// Withdraw every approved template: the account may send any text again.
    Clear {
        /// Account id or name.
        account: String,
    },
}

async fn templates(store: &SharedStore, cmd: TemplatesCmd) -> anyhow::Result<()> {
    let now = otp_store::now_micros();
    match cmd {
        TemplatesCmd::List { account, json } => {
            let a = find_account(store, &account).await?;
            let list = store.account_templates(a.id).await?;
            if json {
                let texts: Vec<&str> = list.iter().map(|t| t.text.as_str()).collect();
                println!("{}", json!({ "account_id": a.id, "templates": texts }));
            } else if list.is_empty() {
                println!(
                    "account {} has no approved templates: it may send any text",
                    a.id
                );
            } else {
                for t in list {
                    println!("{}", t.text);
                }
            }
        }
        TemplatesCmd::Add { account, text } => {
            let a = find_account(store, &account).await?;
            let template = MessageTemplate::parse(&text)?;
            if store.add_account_template(a.id, &template, now).await? {
                println!("approved for account {}: {}", a.id, template.normalized());
            } else {
                println!("already approved for account {}", a.id);
            }
        }
        TemplatesCmd::Remove { account, text } => {
            let a = find_account(store, &account).await?;
            if !store.remove_account_template(a.id, &text).await? {
                anyhow::bail!("account {} has no such approved template", a.id);
            }
            println!("withdrawn from account {}", a.id);
        }
        TemplatesCmd::Clear { account } => {
            let a = find_account(store, &account).await?;
            store
                .replace_account_templates(a.id, Vec::new(), now)
                .await?;
            println!("account {} may send any text", a.id);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum SendersCmd {
    /// Print an account's senders, one route a line.
    List {
        /// Account id or name.
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Set an account's sender on a route of the configuration.
    Set {
        /// Account id or name.
        account: String,
        route: String,
        /// 1 to 11 ASCII letters and digits, or 1 to 15 digits.
        sender: String,
    },
    /// Remove an account's sender on a route: the route's own is used again.
    Remove {
        /// Account id or name.
        account: String,
        route: String,
    },
}

async fn senders(config: &Config, cmd: SendersCmd) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        SendersCmd::List { account, json } => {
            let a = find_account(&store, &account).await?;
            let list = store.account_senders(a.id).await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|s| json!({ "route": s.route, "sender": s.sender.as_str() }))
                    .collect();
                println!("{}", json!({ "account_id": a.id, "senders": rows }));
            } else {
                for s in list {
                    println!("{}: {}", s.route, s.sender);
                }
            }
        }
        SendersCmd::Set {
            account,
            route,
            sender,
        } => {
            let a = find_account(&store, &account).await?;
            let configured = config
                .routes
                .iter()
                .find(|r| r.name == route)
                .with_context(|| format!("the configuration has no route {route:?}"))?;
            anyhow::ensure!(
                configured.driver.takes_sender(),
                "route {route:?} ({} driver) takes no sender ID",
                configured.driver.kind()
            );
            let sender = SenderId::parse(&sender)?;
            let set = store
                .set_account_sender(a.id, &route, &sender, otp_store::now_micros())
                .await?;
            println!(
                "account {} sends as {} on route {}",
                a.id, set.sender, set.route
            );
        }
        SendersCmd::Remove { account, route } => {
            let a = find_account(&store, &account).await?;
            if !store.remove_account_sender(a.id, &route).await? {
                anyhow::bail!("account {} has no sender on route {route:?}", a.id);
            }
            println!("account {} sends as route {route}'s own sender again", a.id);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum WebhooksCmd {
    /// Set where an account's events go; prints the URL and the signing secret
    /// (made on first use, kept afterwards unless --rotate-secret).
    Set {
        /// Account id or name.
        account: String,
        /// An absolute http or https URL.
        url: String,
        /// Make a new signing secret; the old one stops working at once.
        #[arg(long)]
        rotate_secret: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print an account's webhook URL and signing secret.
    Show {
        /// Account id or name.
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an account's webhook; events not yet delivered are cancelled.
    Remove {
        /// Account id or name.
        account: String,
    },
}

async fn webhooks(config: &Config, cmd: WebhooksCmd) -> anyhow::Result<()> {
    // The secret is sealed under the server's code keys, so these commands
    // use them too (a throwaway vault would seal what the server cannot open).
    let vault = crate::codes::load_vault(config).context("loading the code keys")?;
    let store = crate::startup::open_store_with(config, std::sync::Arc::new(vault)).await?;
    let print = |w: otp_store::webhooks::Webhook, json: bool| {
        let secret = w.secret.as_deref().unwrap_or("(unreadable: rotate it)");
        if json {
            println!(
                "{}",
                json!({ "account_id": w.account_id, "url": w.url, "secret": w.secret })
            );
        } else {
            println!("url: {}\nsecret: {secret}", w.url);
        }
    };
    match cmd {
        WebhooksCmd::Set {
            account,
            url,
            rotate_secret,
            json,
        } => {
            let a = find_account(&store, &account).await?;
            let url = url.trim().to_owned();
            crate::webhooks::check_url(&url, config.webhooks.allow_private_addresses)
                .map_err(|(_, why)| anyhow::anyhow!(why))?;
            let w = store
                .set_webhook(otp_store::webhooks::SetWebhook {
                    account_id: a.id,
                    url,
                    new_secret: otp_domain::webhook::generate_secret(),
                    low_balance_sms_credits: None,
                    low_balance_phone_credits: None,
                    rotate: rotate_secret,
                    now: otp_store::now_micros(),
                })
                .await?;
            print(w, json);
        }
        WebhooksCmd::Show { account, json } => {
            let a = find_account(&store, &account).await?;
            match store.webhook(a.id).await? {
                Some(w) => print(w, json),
                None => anyhow::bail!("account {} has no webhook", a.id),
            }
        }
        WebhooksCmd::Remove { account } => {
            let a = find_account(&store, &account).await?;
            if !store.delete_webhook(a.id, otp_store::now_micros()).await? {
                anyhow::bail!("account {} has no webhook", a.id);
            }
            println!("removed the webhook of account {}", a.id);
        }
    }
    Ok(())
}

async fn guard(config: &Config, cmd: GuardCmd) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let tz = config.timezone()?;
    let now = otp_store::now_micros();
    match cmd {
        GuardCmd::List { json } => {
            let since = now - config.guard.settings().hold;
            let holds = store.guard_holds(since).await?;
            if holds.is_empty() && !json {
                println!("no holds");
            }
            for h in &holds {
                let view = crate::guard::HoldView::new(h, now, &tz);
                if json {
                    println!("{}", serde_json::to_string(&view)?);
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\tuntil {}\t{}",
                        view.id,
                        view.scope,
                        view.value,
                        view.account_id
                            .map_or_else(|| "all accounts".to_owned(), |a| format!("account {a}")),
                        if view.active { "active" } else { "ended" },
                        view.until,
                        view.reason
                    );
                }
            }
        }
        GuardCmd::Release { id } => match store.release_hold(id, "cli", now).await? {
            Some(h) => println!(
                "released hold {} ({} {}); nodes lift it within {} ms",
                h.id,
                h.scope.as_str(),
                h.value,
                config.guard.refresh_ms
            ),
            None => anyhow::bail!("no standing hold {id} (unknown, ended or released)"),
        },
    }
    Ok(())
}

async fn keys(store: &SharedStore, cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Create {
            account,
            label,
            scopes,
            json,
        } => {
            let label = label.map(|l| Label::parse("label", l)).transpose()?;
            let a = find_account(store, &account).await?;
            let key = accounts::create_key(store, a.id, label, scopes).await?;
            let rec = key.record;
            if json {
                println!(
                    "{}",
                    json!({ "account_id": a.id, "key_id": rec.key_id, "api_key": key.api_key,
                            "scopes": rec.scopes.names() })
                );
            } else {
                println!(
                    "key_id: {}\napi_key: {}\nscopes: {}",
                    rec.key_id, key.api_key, rec.scopes
                );
            }
        }
        KeysCmd::List { account, json } => {
            let account_id = match account {
                Some(a) => Some(find_account(store, &a).await?.id),
                None => None,
            };
            let list = store.list_keys(account_id).await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|k| {
                        json!({ "key_id": k.key_id, "account_id": k.account_id, "label": k.label,
                                "created_at": k.created_at, "last_used": k.last_used,
                                "revoked": k.revoked_at.is_some(), "scopes": k.scopes.names() })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<14} {:>8}  {:<8} {:<24} label",
                    "key_id", "account", "state", "scopes"
                );
                for k in list {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<14} {:>8}  {:<8} {:<24} {}",
                        k.key_id,
                        k.account_id,
                        state,
                        k.scopes.to_string(),
                        k.label.unwrap_or_default()
                    );
                }
            }
        }
        KeysCmd::Revoke { key } => {
            let key_id = crate::auth::key_id_of(&key).unwrap_or(&key).to_owned();
            match accounts::revoke_key(store, &key_id).await {
                Ok(()) => println!("revoked {key_id}"),
                Err(Refusal::NotFound) => anyhow::bail!("no active key {key_id:?}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// `--scopes`: names separated by commas or spaces.
fn parse_scopes(text: &str) -> Result<Scopes, String> {
    Scopes::parse_list(text)
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Create a user of an account. The password is read from standard input
    /// (its first line), never from the command line.
    Create {
        /// Account id or name.
        account: String,
        /// Unique whatever its case; kept in lower case.
        email: String,
        /// Print one JSON object with user_id, email and account_id.
        #[arg(long)]
        json: bool,
        /// An operator: besides its account, it may open the console's
        /// operator pages (every account, the routes, every OTP).
        #[arg(long)]
        operator: bool,
    },
    /// List users.
    List {
        /// Only this account (id or name).
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password, read from standard input (its first line). The
    /// user's tokens stop working, its sessions (refresh tokens) are revoked
    /// and its failed logins are forgotten.
    SetPassword {
        /// The user's email, any case.
        email: String,
    },
    /// Print the id that the server's log gives an email (failed and refused
    /// logins name the email by it, never in plain). Needs the servers'
    /// `auth.token_secret`.
    LogId {
        /// The email, any case.
        email: String,
    },
}

/// The first line of standard input, as a new password under `rules`. At a
/// terminal a prompt is shown first (and the input is echoed: pipe it to avoid
/// that).
fn read_password(rules: PasswordRules) -> anyhow::Result<NewPassword> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password: ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line)
        .to_owned();
    NewPassword::parse(password, rules)
        .map_err(|refused| anyhow::anyhow!("{refused} ({})", refused.code()))
}

async fn users(config: &Config, cmd: UsersCmd) -> anyhow::Result<()> {
    let rules = PasswordRules::for_mode(config.mode);
    match cmd {
        UsersCmd::LogId { email } => {
            if config.auth.token_secret.is_none() {
                anyhow::bail!(
                    "auth.token_secret is not set: log ids are keyed with the servers' token secret"
                );
            }
            let auth = crate::users::UserAuth::load(config)?;
            println!("{}", auth.email_log_id(&Email::normalise(&email)));
        }
        UsersCmd::Create {
            account,
            email,
            json,
            operator,
        } => {
            let store = &open_store(config).await?;
            let a = find_account(store, &account).await?;
            let email = Email::parse(&email).map_err(|m| anyhow::anyhow!(m))?;
            let password = read_password(rules)?;
            let password_hash = hash_now(password.expose())?;
            let mut user = accounts::create_user(store, a.id, &email, password_hash).await?;
            if operator {
                user = accounts::make_operator(store, user.id).await?;
            }
            if json {
                println!(
                    "{}",
                    json!({ "user_id": user.id, "email": user.email, "account_id": user.account_id,
                            "operator": user.operator })
                );
            } else {
                println!("user_id: {}\nemail: {}", user.id, user.email);
                if user.operator {
                    println!("operator: yes");
                }
            }
        }
        UsersCmd::List { account, json } => {
            let store = &open_store(config).await?;
            let account_id = match account {
                Some(a) => Some(find_account(store, &a).await?.id),
                None => None,
            };
            let list = store.list_users(account_id).await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|u| {
                        json!({ "user_id": u.id, "email": u.email, "account_id": u.account_id,
                                "created_at": u.created_at, "operator": u.operator })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:>6}  {:>8}  email", "id", "account");
                for u in list {
                    println!("{:>6}  {:>8}  {}", u.id, u.account_id, u.email);
                }
            }
        }
        UsersCmd::SetPassword { email } => {
            let store = open_store(config).await?;
            let user = store
                .user_by_email(Email::normalise(&email).as_str())
                .await?
                .with_context(|| format!("no user {email:?}"))?;
            let password = read_password(rules)?;
            let hash = hash_now(password.expose())?;
            accounts::set_password(&store, user.id, &hash)
                .await
                .map_err(|e| match e {
                    Refusal::NotFound => anyhow::anyhow!("no user {email:?}"),
                    other => other.into(),
                })?;
            println!("password set for {}", user.email);
        }
    }
    Ok(())
}
