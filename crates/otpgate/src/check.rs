//! Checking a configuration before it is used, and a node before it serves.
//!
//! - [`check_file`] (`otpgate check-config FILE`): every problem of a file at
//!   once. Each top-level setting and each `[[routes]]` entry is read on its
//!   own, so a bad value in one does not hide the others; then the settings
//!   that read are checked against each other with [`problems`], which a
//!   `SIGHUP` reload runs too. Nothing is connected to and no file is written.
//! - [`doctor`] (`otpgate doctor`): what a node needs to serve, one line per
//!   check: the configuration, the secrets production mode needs, the store
//!   (reachable, every migration applied), espeak-ng when a voice route
//!   is configured, each SMPP route's SMSC (reachable, bind accepted) and the
//!   clock (against PostgreSQL's, or sane on its own with SQLite).

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Provider};

use crate::config::{Config, Mode};
use crate::delivery::settings::DriverConfig;

/// The top-level keys of a configuration file.
const TOP_LEVEL: &[&str] = &[
    "listen",
    "admin_listen",
    "database_url",
    "public_url",
    "timezone",
    "node_id",
    "log",
    "api",
    "store",
    "delivery",
    "demo",
    "voice",
    "mode",
    "secrets",
    "verify",
    "limits",
    "auth",
    "admin",
    "webhooks",
    "guard",
    "alerts",
    "routes",
    "routing",
];

/// The file as `serve` reads it: the file, then `OTPGATE_*` variables.
fn figment(path: &Path) -> Figment {
    Figment::new().merge(Toml::file(path)).merge(
        Env::prefixed("OTPGATE_")
            .ignore(&["config", "test_pg_url"])
            .split("__"),
    )
}

/// Every problem of the configuration file at `path` (with the environment's
/// `OTPGATE_*` variables on top, as `serve` reads it); empty when it is fine.
pub fn check_file(path: &Path) -> Vec<String> {
    if !path.exists() {
        return vec![format!("{} does not exist", path.display())];
    }
    let figment = figment(path);
    // A syntax error stops the reading of the whole file: it is the one problem.
    let data: Dict = match figment.data() {
        Ok(mut profiles) => profiles
            .remove(&figment::Profile::Default)
            .unwrap_or_default(),
        Err(e) => return vec![one_line(&e.to_string())],
    };
    let mut problems = Vec::new();
    let mut good = Dict::new();
    for (key, value) in &data {
        if !TOP_LEVEL.contains(&key.as_str()) {
            problems.push(format!("unknown setting {key:?}"));
            continue;
        }
        if key == "routes" {
            let Some(list) = value.as_array() else {
                problems.push("routes must be a list of [[routes]] tables".into());
                continue;
            };
            let mut routes = Vec::new();
            for (i, route) in list.iter().enumerate() {
                match alone("routes", Value::from(vec![route.clone()]), &["routes", "0"]) {
                    None => routes.push(route.clone()),
                    // A route refused as a whole names itself already.
                    Some(e) if e.starts_with("route ") => problems.push(e),
                    Some(e) => problems.push(format!("routes[{i}]{}: {e}", route_name(route))),
                }
            }
            good.insert(key.clone(), Value::from(routes));
            continue;
        }
        // A table's settings are read one by one, so each bad one is reported.
        if let Some(table) = value.as_dict() {
            let mut kept = Dict::new();
            for (sub, v) in table {
                let mut one = Dict::new();
                one.insert(sub.clone(), v.clone());
                match alone(key, Value::from(one), &[]) {
                    None => {
                        kept.insert(sub.clone(), v.clone());
                    }
                    Some(e) => problems.push(e),
                }
            }
            good.insert(key.clone(), Value::from(kept));
            continue;
        }
        match alone(key, value.clone(), &[]) {
            None => {
                good.insert(key.clone(), value.clone());
            }
            Some(e) => problems.push(e),
        }
    }
    match Figment::new()
        .merge(figment::providers::Serialized::defaults(good))
        .extract::<Config>()
    {
        Ok(config) => problems.extend(problems_of(&config)),
        Err(e) => problems.push(describe(&e, &[])),
    }
    problems
}

/// A reading error as `setting: what is wrong`, without where in this
/// program the value came from; `skip` leading path parts are left out.
fn describe(e: &figment::Error, skip: &[&str]) -> String {
    let mut path: &[String] = &e.path;
    for part in skip {
        match path.split_first() {
            Some((first, rest)) if first == part => path = rest,
            _ => break,
        }
    }
    let text = if path.is_empty() {
        e.kind.to_string()
    } else {
        format!("{}: {}", path.join("."), e.kind)
    };
    one_line(&text)
}

/// What is wrong with a configuration holding only `key`, if anything
/// (see [`describe`] for `skip`).
fn alone(key: &str, value: Value, skip: &[&str]) -> Option<String> {
    let mut dict = Dict::new();
    dict.insert(key.to_owned(), value);
    Figment::new()
        .merge(figment::providers::Serialized::defaults(dict))
        .extract::<Config>()
        .err()
        .map(|e| describe(&e, skip))
}

fn route_name(route: &Value) -> String {
    route
        .find_ref("name")
        .and_then(|n| n.as_str())
        .map(|n| format!(" ({n:?})"))
        .unwrap_or_default()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The problems of a configuration that read: what `serve` would refuse at
/// start (apart from what needs the network or the store), and what a reload
/// refuses. Empty when there is none.
pub fn problems(config: &Config) -> Vec<String> {
    problems_of(config)
}

fn problems_of(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let mut note = |r: anyhow::Result<()>| {
        if let Err(e) = r {
            problems.push(one_line(&format!("{e:#}")));
        }
    };
    note(config.timezone().map(|_| ()));
    if let Some(problem) = config.routing.problem() {
        note(Err(anyhow::anyhow!(problem)));
    }
    for problem in config.guard.problems() {
        note(Err(anyhow::anyhow!(problem)));
    }
    let url = config.database_url.expose();
    if !["sqlite://", "sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        note(Err(anyhow::anyhow!(
            "database_url must start with sqlite:// or postgres://"
        )));
    }
    note(
        tracing_subscriber::EnvFilter::try_new(&config.log.level)
            .map(|_| ())
            .map_err(|e| {
                anyhow::anyhow!(
                    "log.level {:?} is not a valid filter: {e}",
                    config.log.level
                )
            }),
    );
    note(match config.log.format.as_str() {
        "text" | "json" => Ok(()),
        other => Err(anyhow::anyhow!(
            "log.format must be text or json, not {other:?}"
        )),
    });
    for proxy in &config.api.trusted_proxies {
        note(
            proxy
                .parse::<crate::peer::Cidr>()
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("api.trusted_proxies: {e}")),
        );
    }
    let secrets = &config.secrets;
    let complete_keys = secrets.hmac_key.is_some()
        && !secrets.encryption_keys.is_empty()
        && !secrets.current_key_id.is_empty();
    if config.mode == Mode::Production || complete_keys {
        // Builds the keys from the configuration alone: no file is read.
        note(crate::codes::load_vault(config).map(|_| ()));
    } else {
        note(crate::codes::check_verify_settings(config));
    }
    note(crate::users::UserAuth::load(config).map(|_| ()));
    note(
        crate::delivery::voice::Prompter::new(&config.voice)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("invalid [voice] settings: {e}")),
    );
    for country in &config.limits.allowed_countries {
        if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
            note(Err(anyhow::anyhow!(
                "limits.allowed_countries: {country:?} is not a two-letter region code"
            )));
        }
    }
    for prefix in &config.limits.denied_prefixes {
        note(e164_prefix("limits.denied_prefixes", prefix));
    }
    let mut names = std::collections::HashSet::new();
    for r in &config.routes {
        if r.name.trim().is_empty() {
            note(Err(anyhow::anyhow!("a route has no name")));
        } else if !names.insert(r.name.as_str()) {
            note(Err(anyhow::anyhow!("route {:?} is defined twice", r.name)));
        }
        for prefix in &r.prefixes {
            note(e164_prefix(&format!("route {}: prefixes", r.name), prefix));
        }
        note(route_problem(r, config));
    }
    problems
}

fn e164_prefix(setting: &str, prefix: &str) -> anyhow::Result<()> {
    let digits = prefix.strip_prefix('+').unwrap_or("");
    anyhow::ensure!(
        !digits.is_empty() && digits.len() <= 15 && digits.chars().all(|c| c.is_ascii_digit()),
        "{setting}: {prefix:?} is not an E.164 prefix such as +977984"
    );
    Ok(())
}

/// What building route `r` would refuse, without connecting or starting it.
/// Its driver and channel were checked as the file was read.
fn route_problem(r: &crate::config::RouteConfig, config: &Config) -> anyhow::Result<()> {
    use crate::delivery::http::{
        aakash::AakashDriver, generic::GenericHttpDriver, sparrow::SparrowDriver,
        tingting::TingTingDriver,
    };
    let in_route = |e: crate::delivery::http::BuildError| anyhow::anyhow!("route {}: {e}", r.name);
    match &r.driver {
        DriverConfig::Log { .. } => {}
        DriverConfig::Smpp(smpp) => smpp.check(&r.name)?,
        DriverConfig::Sparrow(c) => {
            SparrowDriver::new(c.clone()).map_err(in_route)?;
        }
        DriverConfig::Aakash(c) => {
            AakashDriver::new(c.clone()).map_err(in_route)?;
        }
        DriverConfig::Http(c) => {
            GenericHttpDriver::new(c.clone()).map_err(in_route)?;
        }
        DriverConfig::TingTing(c) => {
            TingTingDriver::new(c.clone()).map_err(in_route)?;
        }
        DriverConfig::Sip(sip) => {
            let prompter = crate::delivery::voice::Prompter::new(&config.voice)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let driver = crate::delivery::voice::sip::SipDriver::new(
                &r.name,
                sip,
                &config.voice,
                std::sync::Arc::new(prompter),
            )
            .map_err(|e| anyhow::anyhow!("route {}: invalid [routes.sip]: {e}", r.name))?;
            anyhow::ensure!(
                Duration::from_secs(config.delivery.lease_seconds) > driver.longest_attempt(),
                "route {}: a call attempt can take up to {} s, longer than \
                 delivery.lease_seconds ({})",
                r.name,
                driver.longest_attempt().as_secs(),
                config.delivery.lease_seconds
            );
        }
    }
    Ok(())
}

/// One check of [`doctor`].
#[derive(Debug, Clone)]
pub struct Finding {
    /// What was checked, e.g. `store` or `smsc ntc`.
    pub check: String,
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {}: {}", self.check, self.detail)
    }
}

/// How far the clock may be from the database's before it counts as wrong.
const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// How long one SMSC probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every check of a node with `config` (read from `source`), one
/// finding each, in a fixed order.
pub async fn doctor(config: &Config, source: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut push = |check: &str, result: Result<String, String>| {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        findings.push(Finding {
            check: check.to_owned(),
            ok,
            detail: one_line(&detail),
        });
    };
    // The secrets get a line of their own; the config line leaves them out.
    let secret_problems: Vec<String> = match config.mode {
        Mode::Production => [
            crate::codes::load_vault(config).err(),
            crate::users::UserAuth::load(config).err(),
        ]
        .into_iter()
        .flatten()
        .map(|e| one_line(&format!("{e:#}")))
        .collect(),
        Mode::Development => Vec::new(),
    };
    let problems: Vec<String> = problems(config)
        .into_iter()
        .filter(|p| !secret_problems.contains(p))
        .collect();
    push(
        "config",
        if problems.is_empty() && secret_problems.is_empty() {
            Ok(format!("{source} reads and checks clean"))
        } else if problems.is_empty() {
            Ok(format!(
                "{source} reads; its only problems are the secrets below"
            ))
        } else {
            Err(problems.join("; "))
        },
    );
    push(
        "secrets",
        match config.mode {
            Mode::Production if secret_problems.is_empty() => {
                Ok("production mode: code keys and auth.token_secret set".into())
            }
            Mode::Production => Err(secret_problems.join("; ")),
            Mode::Development => Ok("development mode: keys may be generated locally".into()),
        },
    );

    let url = config.database_url.expose();
    let database = config.database_for_logs();
    let store = match otp_store::missing_migrations(url).await {
        Ok(missing) if missing.is_empty() => {
            Ok(format!("{database} answers, every migration applied"))
        }
        Ok(missing) => Err(format!(
            "{database} answers but lacks migrations {} (run otpgate migrate)",
            missing.join(", ")
        )),
        Err(e) => Err(format!("{database}: {e}")),
    };
    let store_ok = store.is_ok();
    push("store", store);

    let voice_routes: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| matches!(r.driver, DriverConfig::Sip(_)))
        .map(|r| r.name.as_str())
        .collect();
    if !voice_routes.is_empty() {
        let result = match crate::delivery::voice::Prompter::new(&config.voice) {
            Ok(p) => p
                .check()
                .await
                .map(|v| format!("{} (for {})", v.trim(), voice_routes.join(", ")))
                .map_err(|e| format!("{e}")),
            Err(e) => Err(format!("invalid [voice] settings: {e}")),
        };
        push("espeak-ng", result);
    }

    for r in &config.routes {
        let DriverConfig::Smpp(smpp) = &r.driver else {
            continue;
        };
        let target = format!("{}:{}", smpp.host, smpp.port);
        let result = match tokio::time::timeout(PROBE_TIMEOUT, smpp.probe(&r.name)).await {
            Ok(Ok(smsc)) => Ok(format!("{target} accepted the bind (SMSC {smsc:?})")),
            Ok(Err(e)) => Err(format!("{target}: {e:#}")),
            Err(_) => Err(format!(
                "{target}: no answer in {} s",
                PROBE_TIMEOUT.as_secs()
            )),
        };
        push(&format!("smsc {}", r.name), result);
    }

    push("clock", clock(url, store_ok).await);
    findings
}

/// The clock against PostgreSQL's, or on its own (after the build's year,
/// before 2100) with SQLite.
async fn clock(url: &str, store_ok: bool) -> Result<String, String> {
    let now = chrono::Utc::now();
    let earliest = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("a valid date")
        .with_timezone(&chrono::Utc);
    let latest = chrono::DateTime::parse_from_rfc3339("2100-01-01T00:00:00Z")
        .expect("a valid date")
        .with_timezone(&chrono::Utc);
    if now < earliest || now > latest {
        return Err(format!(
            "the system clock reads {now}, which cannot be right"
        ));
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) || !store_ok {
        return Ok(format!("{} UTC", now.format("%Y-%m-%d %H:%M:%S")));
    }
    let db_now = database_clock(url).await?;
    let skew = (db_now - chrono::Utc::now()).abs();
    let skew = skew.to_std().unwrap_or_default();
    if skew > CLOCK_SKEW {
        Err(format!(
            "{} s from the database server's clock (more than {} s)",
            skew.as_secs(),
            CLOCK_SKEW.as_secs()
        ))
    } else {
        Ok(format!(
            "within {} ms of the database server's clock",
            skew.as_millis()
        ))
    }
}

async fn database_clock(url: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let micros = otp_store::database_now_micros(url)
        .await
        .map_err(|e| e.to_string())?;
    chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| "the database's clock is out of range".into())
}

#[cfg(test)]
mod tests {
    use super::e164_prefix;

    #[test]
    fn prefixes_must_be_plus_and_digits() {
        assert!(e164_prefix("x", "+977984").is_ok());
        for bad in ["977984", "+", "+97a", "+1234567890123456"] {
            assert!(e164_prefix("x", bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod route_tests {
    use super::check_file;

    #[test]
    fn check_config_names_each_bad_guard_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.toml");
        std::fs::write(
            &path,
            "[guard]\nmin_volume = 0\ncollapse_ratio = 1.5\nwindow_seconds = 30\n\
             [alerts]\nwebhook_url = \"http://127.0.0.1:9/alerts\"\n",
        )
        .unwrap();
        let problems = check_file(&path);
        assert_eq!(
            problems,
            [
                "guard.window_seconds must be at least guard.bucket_seconds, which must be above 0",
                "guard.min_volume must be above 0",
                "guard.collapse_ratio must be between 0 and 1",
            ],
        );
    }

    #[test]
    fn check_config_names_each_bad_route_once_with_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.toml");
        std::fs::write(
            &path,
            r#"
[[routes]]
name = "file"
channel = "text"
driver = "log"
[routes.smpp]
system_id = "a"
[[routes]]
name = "web"
channel = "text"
driver = "http"
[[routes]]
name = "ntc"
channel = "voice"
driver = "smpp"
[routes.smpp]
system_id = "a"
[[routes]]
name = "wide"
channel = "text"
driver = "smpp"
[routes.smpp]
system_id = "a"
window = "ten"
[[routes]]
name = "mail"
channel = "text"
driver = "smtp"
"#,
        )
        .unwrap();
        assert_eq!(
            check_file(&path),
            [
                "route file: [routes.smpp] is a setting of driver smpp, not of driver log",
                "route web: driver http needs a [routes.http] table",
                "route ntc: driver \"smpp\" does not carry voice OTPs",
                "routes[3] (\"wide\"): smpp.window: invalid type: found string \"ten\", expected usize",
                "route mail: driver must be one of log, smpp, sparrow, aakash, http, tingting, sip, not \"smtp\"",
            ]
        );
    }

    #[test]
    fn check_config_names_a_routing_setting_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.toml");
        std::fs::write(&path, "[routing]\nprobe_percent = 90\n").unwrap();
        assert_eq!(
            check_file(&path),
            ["routing.probe_percent must be between 0 and 50"]
        );
        std::fs::write(&path, "[routing]\nwindow = 50\nprobe_percent = 10\n").unwrap();
        assert!(check_file(&path).is_empty(), "a good [routing] table");
    }
}
