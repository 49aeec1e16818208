//! `[[routes]]`: one carrier route's table, with each driver's own settings.
//! It lives with the drivers it configures; `crate::config` includes it.

use anyhow::Context;
use serde::Deserialize;

/// One carrier route (`[[routes]]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in metrics, `/readyz` and receipts matching.
    pub name: String,
    /// `text` or `voice`.
    pub channel: String,
    /// Destination prefixes in E.164 (`+977984`); empty: every destination.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// `log`, `smpp`, `sparrow`, `aakash`, `http` or `tingting`; each but `log`
    /// takes its settings from the table of the same name.
    pub driver: String,
    /// For `log`: where to write (default: `delivery.log_path`).
    #[serde(default)]
    pub log_path: Option<String>,
    /// For `smpp`.
    #[serde(default)]
    pub smpp: Option<crate::delivery::smpp::SmppConfig>,
    /// For `sparrow` (Sparrow SMS).
    #[serde(default)]
    pub sparrow: Option<crate::delivery::http::sparrow::SparrowConfig>,
    /// For `aakash` (Aakash SMS).
    #[serde(default)]
    pub aakash: Option<crate::delivery::http::aakash::AakashConfig>,
    /// For `http` (any HTTP API, templated).
    #[serde(default)]
    pub http: Option<crate::delivery::http::generic::GenericHttpConfig>,
    /// For `tingting` (relay to a TingTing-compatible API; text and voice).
    #[serde(default)]
    pub tingting: Option<crate::delivery::http::tingting::TingTingConfig>,
    /// For `sip` (voice calls through a SIP trunk).
    #[serde(default)]
    pub sip: Option<crate::delivery::voice::sip::SipConfig>,
}

/// The driver's own table of a route, which must be there.
pub(crate) fn table<T: Clone>(
    value: &Option<T>,
    route: &RouteConfig,
    driver: &str,
) -> anyhow::Result<T> {
    value.clone().with_context(|| {
        format!(
            "route {}: driver {driver} needs a [routes.{driver}] table",
            route.name
        )
    })
}
