//! `[[routes]]`: one carrier route, with the settings of its driver. It lives
//! with the drivers it configures; `crate::config` includes it.
//!
//! A route is written as a flat table ([`RouteTable`]: `driver = "smpp"` and a
//! `[routes.smpp]` table beside it) and read into a [`RouteConfig`] whose
//! [`DriverConfig`] has one variant per driver, holding that driver's settings
//! only. The step between the two runs while the configuration is read, so a
//! route naming an unknown driver or channel, a driver on a channel it cannot
//! carry, a missing driver table or a table of another driver is refused when
//! the file is loaded (by `serve`, a reload, `check-config` and `doctor`), with
//! the route's name and the setting in the message. What a driver's own
//! settings must satisfy beyond their types is checked by the driver when it is
//! built (and by `crate::check` without building it).

use std::fmt;

use serde::Deserialize;

use otp_domain::channel::Channel;

use crate::delivery::http::aakash::AakashConfig;
use crate::delivery::http::generic::GenericHttpConfig;
use crate::delivery::http::sparrow::SparrowConfig;
use crate::delivery::http::tingting::TingTingConfig;
use crate::delivery::smpp::SmppConfig;
use crate::delivery::voice::sip::SipConfig;

/// One carrier route (`[[routes]]`), checked as it was read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RouteTable")]
pub struct RouteConfig {
    /// Unique name, used in metrics, `/readyz` and receipts matching.
    pub name: String,
    /// The OTPs it carries.
    pub channel: Channel,
    /// Destination prefixes in E.164 (`+977984`); empty: every destination.
    pub prefixes: Vec<String>,
    /// Its share of the messages of the destinations it serves, against the
    /// other routes serving them (see [`crate::delivery::balance`]); none
    /// configured on any: the first route in order takes them.
    pub weight: Option<u32>,
    /// The driver and its settings.
    pub driver: DriverConfig,
}

/// A route's driver with its own settings, one variant per `driver` name.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverConfig {
    /// `log`: one JSON line per delivery, to `log_path` or, unset, to the
    /// shared `delivery.log_path`.
    Log { log_path: Option<String> },
    /// `smpp`: an operator's SMSC (text only).
    Smpp(SmppConfig),
    /// `sparrow`: Sparrow SMS (text only).
    Sparrow(SparrowConfig),
    /// `aakash`: Aakash SMS (text only).
    Aakash(AakashConfig),
    /// `http`: any HTTP API, templated (text only).
    Http(GenericHttpConfig),
    /// `tingting`: a TingTing-compatible API (text and voice).
    TingTing(TingTingConfig),
    /// `sip`: calls through a SIP trunk (voice only).
    Sip(SipConfig),
}

/// Every `driver` name, in the order the documentation lists them.
const DRIVERS: [&str; 7] = [
    "log", "smpp", "sparrow", "aakash", "http", "tingting", "sip",
];

impl DriverConfig {
    /// Whether a route of this driver takes an account's own sender ID (as
    /// its built driver's [`Driver::takes_sender`](super::Driver::takes_sender)
    /// says): SMPP, Sparrow, and an HTTP route whose templates use
    /// `{sender}`.
    pub fn takes_sender(&self) -> bool {
        use super::Driver;
        match self {
            DriverConfig::Smpp(_) | DriverConfig::Sparrow(_) => true,
            DriverConfig::Http(c) => super::http::generic::GenericHttpDriver::new(c.clone())
                .is_ok_and(|d| d.takes_sender()),
            DriverConfig::Log { .. }
            | DriverConfig::Aakash(_)
            | DriverConfig::TingTing(_)
            | DriverConfig::Sip(_) => false,
        }
    }

    /// The `driver` name it is written with.
    pub fn kind(&self) -> &'static str {
        match self {
            DriverConfig::Log { .. } => "log",
            DriverConfig::Smpp(_) => "smpp",
            DriverConfig::Sparrow(_) => "sparrow",
            DriverConfig::Aakash(_) => "aakash",
            DriverConfig::Http(_) => "http",
            DriverConfig::TingTing(_) => "tingting",
            DriverConfig::Sip(_) => "sip",
        }
    }

    /// Whether the carrier reports delivery receipts: an SMSC asked for
    /// them. Elsewhere the carrier taking a message is as far as it goes.
    pub fn sends_receipts(&self) -> bool {
        matches!(self, DriverConfig::Smpp(smpp) if smpp.registered_delivery)
    }

    /// Whether the driver can deliver OTPs of `channel`.
    pub fn carries(&self, channel: Channel) -> bool {
        match self {
            DriverConfig::Log { .. } | DriverConfig::TingTing(_) => true,
            DriverConfig::Sip(_) => channel == Channel::Voice,
            DriverConfig::Smpp(_)
            | DriverConfig::Sparrow(_)
            | DriverConfig::Aakash(_)
            | DriverConfig::Http(_) => channel == Channel::Text,
        }
    }
}

/// A `[[routes]]` table as it is written: the driver's name and a table per
/// driver, of which only the named driver's may be there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    name: String,
    /// `text` or `voice`.
    channel: String,
    #[serde(default)]
    prefixes: Vec<String>,
    /// Share of the messages (smooth weighted round-robin); 0: standby.
    #[serde(default)]
    weight: Option<u32>,
    /// `log`, `smpp`, `sparrow`, `aakash`, `http`, `tingting` or `sip`; each
    /// but `log` takes its settings from the table of the same name.
    driver: String,
    /// For `log`: where to write (default: `delivery.log_path`).
    #[serde(default)]
    log_path: Option<String>,
    #[serde(default)]
    smpp: Option<SmppConfig>,
    #[serde(default)]
    sparrow: Option<SparrowConfig>,
    #[serde(default)]
    aakash: Option<AakashConfig>,
    #[serde(default)]
    http: Option<GenericHttpConfig>,
    #[serde(default)]
    tingting: Option<TingTingConfig>,
    #[serde(default)]
    sip: Option<SipConfig>,
}

/// Why a `[[routes]]` table was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// The route's name as written.
    pub route: String,
    /// What is wrong, naming the setting.
    pub problem: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}: {}", self.route, self.problem)
    }
}

impl std::error::Error for RouteError {}

impl TryFrom<RouteTable> for RouteConfig {
    type Error = RouteError;

    fn try_from(table: RouteTable) -> Result<Self, RouteError> {
        let refuse = |problem: String| RouteError {
            route: table.name.clone(),
            problem,
        };
        let channel = Channel::parse(&table.channel).ok_or_else(|| {
            refuse(format!(
                "channel must be text or voice, not {:?}",
                table.channel
            ))
        })?;
        let driver = table.driver_config().map_err(refuse)?;
        if let Some(other) = table.tables_present().find(|t| *t != driver.kind()) {
            let setting = match other {
                "log" => "log_path".to_owned(),
                other => format!("[routes.{other}]"),
            };
            return Err(refuse(format!(
                "{setting} is a setting of driver {other}, not of driver {}",
                driver.kind()
            )));
        }
        if !driver.carries(channel) {
            return Err(refuse(format!(
                "driver {:?} does not carry {channel} OTPs",
                driver.kind()
            )));
        }
        Ok(RouteConfig {
            name: table.name,
            channel,
            prefixes: table.prefixes,
            weight: table.weight,
            driver,
        })
    }
}

impl RouteTable {
    /// The drivers whose settings the table holds.
    fn tables_present(&self) -> impl Iterator<Item = &'static str> {
        [
            ("log", self.log_path.is_some()),
            ("smpp", self.smpp.is_some()),
            ("sparrow", self.sparrow.is_some()),
            ("aakash", self.aakash.is_some()),
            ("http", self.http.is_some()),
            ("tingting", self.tingting.is_some()),
            ("sip", self.sip.is_some()),
        ]
        .into_iter()
        .filter_map(|(driver, present)| present.then_some(driver))
    }

    /// The named driver with its table, which must be there (but for `log`).
    fn driver_config(&self) -> Result<DriverConfig, String> {
        fn needed<T: Clone>(table: &Option<T>, driver: &str) -> Result<T, String> {
            table
                .clone()
                .ok_or_else(|| format!("driver {driver} needs a [routes.{driver}] table"))
        }
        Ok(match self.driver.as_str() {
            "log" => DriverConfig::Log {
                log_path: self.log_path.clone(),
            },
            "smpp" => DriverConfig::Smpp(needed(&self.smpp, "smpp")?),
            "sparrow" => DriverConfig::Sparrow(needed(&self.sparrow, "sparrow")?),
            "aakash" => DriverConfig::Aakash(needed(&self.aakash, "aakash")?),
            "http" => DriverConfig::Http(needed(&self.http, "http")?),
            "tingting" => DriverConfig::TingTing(needed(&self.tingting, "tingting")?),
            "sip" => DriverConfig::Sip(needed(&self.sip, "sip")?),
            other => {
                return Err(format!(
                    "driver must be one of {}, not {other:?}",
                    DRIVERS.join(", ")
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// `Config::load` of a file holding `toml`, as `serve` reads it.
    fn load(toml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(Some(&path)).map_err(|e| format!("{e:#}"))
    }

    fn refusal(toml: &str) -> String {
        match load(toml) {
            Ok(config) => panic!("loaded {:?}", config.routes),
            Err(e) => e,
        }
    }

    fn route(name: &str, channel: &str, driver: &str, rest: &str) -> String {
        format!(
            "[[routes]]\nname = \"{name}\"\nchannel = \"{channel}\"\ndriver = \"{driver}\"\n{rest}\n"
        )
    }

    #[test]
    fn a_weight_is_read_and_only_an_smsc_asked_for_receipts_sends_them() {
        let toml = [
            route(
                "ntc",
                "text",
                "smpp",
                "weight = 3\n[routes.smpp]\nsystem_id = \"acme\"",
            ),
            route(
                "quiet",
                "text",
                "smpp",
                "[routes.smpp]\nsystem_id = \"acme\"\nregistered_delivery = false",
            ),
            route("file", "text", "log", ""),
        ]
        .concat();
        let config = load(&toml).unwrap();
        let read: Vec<(Option<u32>, bool)> = config
            .routes
            .iter()
            .map(|r| (r.weight, r.driver.sends_receipts()))
            .collect();
        assert_eq!(read, [(Some(3), true), (None, false), (None, false)]);
        assert!(refusal(&route("ntc", "text", "log", "weight = -1")).contains("weight"));
    }

    #[test]
    fn a_routing_setting_out_of_range_is_refused_by_name() {
        let refused = refusal("[routing]\nprobe_percent = 80\n");
        assert!(refused.contains("routing.probe_percent"), "{refused}");
        let refused = refusal("[routing]\nwindow = 10\nmin_results = 20\n");
        assert!(refused.contains("routing.min_results"), "{refused}");
        assert!(refusal("[routing]\nwindw = 10\n").contains("windw"));
        let config = load("[routing]\nwindow = 50\nrefresh_ms = 1000\n").unwrap();
        assert_eq!(
            (config.routing.window, config.routing.refresh_ms),
            (50, 1000)
        );
        assert_eq!(
            config.routing.min_results, 20,
            "the rest keep their defaults"
        );
    }

    #[test]
    fn each_driver_is_read_into_its_own_variant_with_its_channel() {
        let toml = [
            route("file", "text", "log", "log_path = \"/tmp/x.jsonl\""),
            route("ntc", "text", "smpp", "[routes.smpp]\nsystem_id = \"acme\""),
            route(
                "sparrow",
                "text",
                "sparrow",
                "[routes.sparrow]\ntoken = \"t\"\nsender = \"s\"",
            ),
            route("aakash", "text", "aakash", "[routes.aakash]\ntoken = \"t\""),
            route(
                "web",
                "text",
                "http",
                "[routes.http]\nurl = \"https://sms.example.com/send?to={to}&text={text}\"",
            ),
            route(
                "relay",
                "voice",
                "tingting",
                "[routes.tingting]\ntoken = \"t\"",
            ),
            route(
                "trunk",
                "voice",
                "sip",
                "[routes.sip]\nproxy = \"192.0.2.10:5060\"",
            ),
            route("shared", "voice", "log", ""),
        ]
        .concat();
        let config = load(&toml).unwrap();
        let read: Vec<(&str, Channel, &str)> = config
            .routes
            .iter()
            .map(|r| (r.name.as_str(), r.channel, r.driver.kind()))
            .collect();
        assert_eq!(
            read,
            [
                ("file", Channel::Text, "log"),
                ("ntc", Channel::Text, "smpp"),
                ("sparrow", Channel::Text, "sparrow"),
                ("aakash", Channel::Text, "aakash"),
                ("web", Channel::Text, "http"),
                ("relay", Channel::Voice, "tingting"),
                ("trunk", Channel::Voice, "sip"),
                ("shared", Channel::Voice, "log"),
            ]
        );
        assert_eq!(
            config.routes[0].driver,
            DriverConfig::Log {
                log_path: Some("/tmp/x.jsonl".into())
            }
        );
        assert_eq!(
            config.routes[7].driver,
            DriverConfig::Log { log_path: None }
        );
        let DriverConfig::Sip(sip) = &config.routes[6].driver else {
            panic!("{:?}", config.routes[6].driver);
        };
        assert_eq!(sip.proxy, "192.0.2.10:5060");
    }

    #[test]
    fn a_table_of_another_driver_is_refused_naming_the_route_and_the_table() {
        let cases = [
            (
                route(
                    "ntc",
                    "text",
                    "smpp",
                    "[routes.smpp]\nsystem_id = \"a\"\n[routes.sip]\nproxy = \"192.0.2.1:5060\"",
                ),
                "route ntc: [routes.sip] is a setting of driver sip, not of driver smpp",
            ),
            (
                route("file", "text", "log", "[routes.smpp]\nsystem_id = \"a\""),
                "route file: [routes.smpp] is a setting of driver smpp, not of driver log",
            ),
            (
                route(
                    "ntc",
                    "text",
                    "smpp",
                    "log_path = \"x.jsonl\"\n[routes.smpp]\nsystem_id = \"a\"",
                ),
                "route ntc: log_path is a setting of driver log, not of driver smpp",
            ),
        ];
        for (toml, expected) in cases {
            let e = refusal(&toml);
            assert!(e.contains(expected), "{expected:?} not in {e:?}");
        }
    }

    #[test]
    fn a_missing_driver_table_is_refused_naming_the_route_and_the_table() {
        for driver in ["smpp", "sparrow", "aakash", "http", "tingting"] {
            let e = refusal(&route("r1", "text", driver, ""));
            let expected = format!("route r1: driver {driver} needs a [routes.{driver}] table");
            assert!(e.contains(&expected), "{expected:?} not in {e:?}");
        }
        let e = refusal(&route("trunk", "voice", "sip", ""));
        assert!(
            e.contains("route trunk: driver sip needs a [routes.sip] table"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_driver_or_channel_or_a_channel_the_driver_cannot_carry_is_refused() {
        let cases = [
            (
                route("ntc", "text", "smtp", ""),
                "route ntc: driver must be one of log, smpp, sparrow, aakash, http, tingting, sip, not \"smtp\"",
            ),
            (
                route("fax", "fax", "log", ""),
                "route fax: channel must be text or voice, not \"fax\"",
            ),
            (
                route("ntc", "voice", "smpp", "[routes.smpp]\nsystem_id = \"a\""),
                "route ntc: driver \"smpp\" does not carry voice OTPs",
            ),
            (
                route(
                    "trunk",
                    "text",
                    "sip",
                    "[routes.sip]\nproxy = \"192.0.2.1:5060\"",
                ),
                "route trunk: driver \"sip\" does not carry text OTPs",
            ),
        ];
        for (toml, expected) in cases {
            let e = refusal(&toml);
            assert!(e.contains(expected), "{expected:?} not in {e:?}");
        }
    }

    #[test]
    fn a_bad_value_in_a_driver_table_is_refused_at_load_naming_the_setting() {
        let e = refusal(&route(
            "ntc",
            "text",
            "smpp",
            "[routes.smpp]\nsystem_id = \"a\"\nwindow = \"ten\"",
        ));
        assert!(
            e.starts_with("invalid configuration: route ntc: invalid type")
                && e.contains("routes.0.smpp.window"),
            "{e}"
        );
        let e = refusal(&route(
            "ntc",
            "text",
            "smpp",
            "[routes.smpp]\nsystem_id = \"a\"\nwindwo = 10",
        ));
        assert!(e.contains("route ntc: ") && e.contains("windwo"), "{e}");
    }
}
