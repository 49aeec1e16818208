//! Run-time control without a restart: the routes of each channel, built from
//! `[[routes]]` and replaced on a configuration reload (`SIGHUP`), the `[limits]`
//! now in force, and the pause, resume and drain of a route (admin API and
//! `otpgate routes`).
//!
//! A reload ([`reload`]) reads the whole file again and applies four parts of
//! it: `[[routes]]`, `[routing]`, `[limits]` and `log.level`. A route whose table is the
//! same as before is kept as it is (its SMPP binds stay up, its pause stays);
//! a new or changed one is built and started; a removed or changed one stops
//! taking messages at once and is shut down (its binds unbound) once its
//! deliveries in flight are done. A file with any problem (see
//! [`crate::check::problems`]) or a route that cannot be built is refused as a
//! whole: nothing changes and the refusal is logged. Every other setting keeps
//! its running value until the next restart.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use otp_domain::channel::Channel;
use otp_store::SharedStore;

use crate::config::{Config, LimitsConfig, RouteConfig};
use crate::delivery::Driver;
use crate::delivery::NewJobs;
use crate::delivery::balance::Balancer;
use crate::delivery::http::aakash::AakashDriver;
use crate::delivery::http::generic::GenericHttpDriver;
use crate::delivery::http::sparrow::SparrowDriver;
use crate::delivery::http::tingting::TingTingDriver;
use crate::delivery::log::LogDriver;
use crate::delivery::router::{Route, RouteControl, RouteState, Router, Table};
use crate::delivery::settings::DriverConfig;
use crate::delivery::smpp::SmppDriver;
use crate::delivery::voice::Prompter;
use crate::delivery::voice::sip::SipDriver;
use crate::metrics::Metrics;

/// The parts of the configuration that change while the server runs.
pub struct Runtime {
    /// The router of each channel; the dispatchers deliver through these.
    routers: Vec<(Channel, Arc<Router>)>,
    builder: RouteBuilder,
    /// `[limits]` as the API checks destinations against it.
    limits: RwLock<Arc<LimitsConfig>>,
    /// Weights and measured delivery of the routes of both channels.
    balancer: Arc<Balancer>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// What building a route's driver needs besides its table.
struct RouteBuilder {
    /// The configuration the server started with: `[delivery]` and `[voice]`
    /// settings that routes use are read from it.
    config: Config,
    store: SharedStore,
    metrics: Arc<Metrics>,
    voice: Arc<Prompter>,
    /// Told of the receipts SMPP routes apply.
    guard: Arc<crate::guard::Guard>,
    /// The `log` driver writing to `delivery.log_path`, shared by its users.
    shared_log: tokio::sync::Mutex<Option<Arc<dyn Driver>>>,
}

/// A route as the admin API and `otpgate routes` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RouteView {
    pub name: String,
    /// `text` or `voice`.
    pub channel: &'static str,
    /// `smpp`, `log`, `sparrow`, ...
    pub driver: String,
    /// `active`, `draining` or `paused`.
    pub state: &'static str,
    /// Deliveries started on the route and not finished.
    pub in_flight: usize,
    /// Its configured share among the routes serving the same destinations;
    /// `null`: none configured.
    pub weight: Option<u32>,
    /// Whether it delivers so much worse than its peers that it only takes
    /// probes (`routing.probe_percent` of the messages).
    pub demoted: bool,
    /// Delivered over finished among its newest `routing.window` finished
    /// OTPs; `null` until one finished.
    pub delivery_rate: Option<f64>,
    /// How many finished OTPs the delivery rate is over.
    pub measured: u32,
    /// The median time from acceptance to the delivery receipt over the
    /// same OTPs, in seconds; `null` until a receipt came.
    pub median_receipt_seconds: Option<f64>,
}

impl Runtime {
    /// Puts the routes and limits of `new` (a reloaded configuration, already
    /// checked) in force: unchanged routes are kept with their binds, new ones
    /// started, removed ones retired once idle (or after one `lease`). Refused
    /// as a whole, changing nothing, when a new route cannot be started.
    /// Returns how many routes were kept, started and stopped.
    pub async fn apply(
        &self,
        new: &Config,
        new_jobs: &NewJobs,
        lease: Duration,
    ) -> anyhow::Result<(usize, usize, usize)> {
        let _one = self.reloading.lock().await;
        let previous: Vec<Arc<Route>> = self
            .routers
            .iter()
            .flat_map(|(_, r)| r.table().routes.clone())
            .collect();
        let tables = self.builder.tables(&new.routes, &previous).await?;
        let mut kept = 0;
        let mut started = 0;
        for (channel, table) in tables {
            for route in &table.routes {
                if previous.iter().any(|p| Arc::ptr_eq(p, route)) {
                    kept += 1;
                } else {
                    started += 1;
                }
            }
            if let Some((_, router)) = self.routers.iter().find(|(c, _)| *c == channel) {
                router.replace(table);
            }
            new_jobs.for_channel(channel).notify_one();
        }
        let in_use: Vec<Arc<Route>> = self
            .routers
            .iter()
            .flat_map(|(_, r)| r.table().routes.clone())
            .collect();
        let unused: Vec<Arc<Route>> = previous
            .into_iter()
            .filter(|p| !in_use.iter().any(|r| Arc::ptr_eq(p, r)))
            .collect();
        let stopped = unused.len();
        for route in unused {
            tokio::spawn(retire(route, lease));
        }
        *self.limits.write().expect("limits poisoned") = Arc::new(new.limits.clone());
        self.balancer.set_settings(new.routing.clone());
        Ok((kept, started, stopped))
    }

    /// Builds (and starts) the routes of `config`.
    pub async fn start(
        config: &Config,
        store: SharedStore,
        metrics: Arc<Metrics>,
        voice: Arc<Prompter>,
        guard: Arc<crate::guard::Guard>,
    ) -> anyhow::Result<Runtime> {
        let builder = RouteBuilder {
            config: config.clone(),
            store,
            metrics,
            voice,
            guard,
            shared_log: tokio::sync::Mutex::new(None),
        };
        let tables = builder.tables(&config.routes, &[]).await?;
        let balancer = Arc::new(Balancer::new(config.routing.clone()));
        let routers = tables
            .into_iter()
            .map(|(channel, table)| (channel, Arc::new(Router::new(table, balancer.clone()))))
            .collect();
        Ok(Runtime {
            routers,
            builder,
            limits: RwLock::new(Arc::new(config.limits.clone())),
            balancer,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads every route's window from the store and decides demotions
    /// (see [`crate::delivery::balance`]).
    pub async fn measure_routes(&self) -> Result<(), otp_store::StoreError> {
        let routes: Vec<Arc<Route>> = self
            .routers
            .iter()
            .flat_map(|(_, r)| r.table().routes.clone())
            .collect();
        if routes.is_empty() {
            return Ok(());
        }
        let settings = self.balancer.settings();
        let no_receipt_after = settings.no_receipt_after_seconds.saturating_mul(1_000_000);
        let query = otp_store::routing::WindowQuery {
            routes: routes
                .iter()
                .map(|r| otp_store::routing::WindowRoute {
                    name: r.name.clone(),
                    receipts: r.settings.driver.sends_receipts(),
                })
                .collect(),
            last: settings.window,
            no_receipt_before: otp_store::now_micros()
                .saturating_sub(i64::try_from(no_receipt_after).unwrap_or(i64::MAX)),
        };
        let windows = self.builder.store.route_windows(query).await?;
        let facts: Vec<(Channel, Vec<String>)> = routes
            .iter()
            .map(|r| (r.settings.channel, r.prefixes.clone()))
            .collect();
        self.balancer.update(&facts, windows);
        Ok(())
    }

    /// Each channel's driver, for the dispatchers.
    pub fn drivers(&self) -> Vec<(Channel, Arc<dyn Driver>)> {
        self.routers
            .iter()
            .map(|(c, r)| (*c, r.clone() as Arc<dyn Driver>))
            .collect()
    }

    /// `[limits]` now in force.
    pub fn limits(&self) -> Arc<LimitsConfig> {
        self.limits.read().expect("limits poisoned").clone()
    }

    /// Every configured route, in configured order per channel.
    pub fn routes(&self) -> Vec<RouteView> {
        self.routers
            .iter()
            .flat_map(|(channel, router)| {
                let table = router.table();
                table
                    .routes
                    .iter()
                    .map(|r| self.view(*channel, r))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether route `name` delivers under an account's own sender ID
    /// ([`Driver::takes_sender`]); `None` when there is no such route.
    pub fn route_takes_sender(&self, name: &str) -> Option<bool> {
        self.routers
            .iter()
            .find_map(|(_, r)| r.route(name))
            .map(|route| route.driver.takes_sender())
    }

    /// Sets route `name` to `state` (a drain becomes a pause once nothing of
    /// the route is in flight); `None` when there is no such route. A resume
    /// wakes the route's channel so waiting messages go at once.
    pub fn set_route_state(
        &self,
        name: &str,
        state: RouteState,
        wake: &NewJobs,
    ) -> Option<RouteView> {
        let (channel, route) = self
            .routers
            .iter()
            .find_map(|(c, r)| r.route(name).map(|route| (*c, route)))?;
        let now = route.control.set(state);
        tracing::info!(route = %route.name, state = now.as_str(), "route state set");
        if now == RouteState::Active {
            wake.for_channel(channel).notify_one();
        }
        Some(self.view(channel, &route))
    }

    fn view(&self, channel: Channel, route: &Route) -> RouteView {
        let measure = self.balancer.measure(&route.name).unwrap_or_default();
        RouteView {
            name: route.name.clone(),
            channel: channel.as_str(),
            driver: route.settings.driver.kind().to_owned(),
            state: route.control.state().as_str(),
            in_flight: route.control.in_flight(),
            weight: route.settings.weight,
            demoted: measure.demoted,
            delivery_rate: measure.window.delivery_rate(),
            measured: measure.window.results(),
            median_receipt_seconds: measure
                .window
                .median_receipt_ms
                .map(|ms| ms as f64 / 1000.0),
        }
    }
}

/// Measures the routes every `routing.refresh_ms` until `stop`, the first
/// time at once. A store that fails keeps the last measures (logged).
pub async fn measure_loop(runtime: Arc<Runtime>, stop: tokio_util::sync::CancellationToken) {
    loop {
        if let Err(e) = runtime.measure_routes().await {
            tracing::warn!(error = %e, "could not measure the routes; keeping the last measures");
        }
        // Read each time: a reload may change it.
        let every = Duration::from_millis(runtime.balancer.settings().refresh_ms.max(100));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Shuts a route that left the configuration down once its deliveries in
/// flight are done, or a job lease later (their jobs may be claimed again by
/// then). The one shared `log` driver has nothing to shut down, so a route
/// that used it leaves it working for the others.
async fn retire(route: Arc<Route>, lease: Duration) {
    let started = std::time::Instant::now();
    while route.control.in_flight() > 0 && started.elapsed() < lease {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    route.driver.shutdown().await;
    tracing::info!(route = %route.name, "route shut down after a reload");
}

impl RouteBuilder {
    /// The table of each channel for `routes`. A route whose name and table
    /// are those of one in `previous` is that route, taken over as it is; the
    /// others are built, keeping the pause of a route of the same name. When
    /// one cannot be built, those built here are shut down again.
    async fn tables(
        &self,
        routes: &[RouteConfig],
        previous: &[Arc<Route>],
    ) -> anyhow::Result<Vec<(Channel, Table)>> {
        let mut built: Vec<Arc<dyn Driver>> = Vec::new();
        match self.tables_in(routes, previous, &mut built).await {
            Ok(tables) => Ok(tables),
            Err(e) => {
                for driver in built {
                    driver.shutdown().await;
                }
                Err(e)
            }
        }
    }

    async fn tables_in(
        &self,
        routes: &[RouteConfig],
        previous: &[Arc<Route>],
        built: &mut Vec<Arc<dyn Driver>>,
    ) -> anyhow::Result<Vec<(Channel, Table)>> {
        let mut by_channel: Vec<(Channel, Vec<Arc<Route>>)> =
            vec![(Channel::Text, Vec::new()), (Channel::Voice, Vec::new())];
        let mut names = std::collections::HashSet::new();
        for r in routes {
            anyhow::ensure!(
                names.insert(r.name.clone()),
                "route {:?} is defined twice",
                r.name
            );
            let channel = r.channel;
            let same_name = previous.iter().find(|p| p.name == r.name);
            let route = match same_name {
                Some(p) if p.settings == *r => p.clone(),
                _ => {
                    let driver = self.driver(r).await?;
                    built.push(driver.clone());
                    Arc::new(Route {
                        name: r.name.clone(),
                        prefixes: r.prefixes.clone(),
                        driver,
                        control: same_name
                            .map(|p| Arc::new(carried_over(&p.control)))
                            .unwrap_or_default(),
                        settings: r.clone(),
                    })
                }
            };
            by_channel
                .iter_mut()
                .find(|(c, _)| *c == channel)
                .expect("both channels are listed")
                .1
                .push(route);
        }
        let mut tables = Vec::new();
        for (channel, routes) in by_channel {
            let fallback = if routes.is_empty() {
                Some(self.shared_log().await?)
            } else {
                None
            };
            tables.push((channel, Table { routes, fallback }));
        }
        Ok(tables)
    }

    /// The driver of one route.
    async fn driver(&self, r: &RouteConfig) -> anyhow::Result<Arc<dyn Driver>> {
        let config = &self.config;
        let name = &r.name;
        Ok(match &r.driver {
            DriverConfig::Log { log_path } => match log_path {
                Some(path) => Arc::new(open_log(path, config, &self.voice).await?),
                None => self.shared_log().await?,
            },
            DriverConfig::Smpp(smpp) => SmppDriver::start(
                name,
                smpp.clone(),
                self.store.clone(),
                self.metrics.clone(),
                self.guard.clone(),
            )?,
            DriverConfig::Sparrow(c) => Arc::new(SparrowDriver::new(c.clone())?),
            DriverConfig::Aakash(c) => Arc::new(AakashDriver::new(c.clone())?),
            DriverConfig::Http(c) => Arc::new(GenericHttpDriver::new(c.clone())?),
            DriverConfig::TingTing(c) => Arc::new(TingTingDriver::new(c.clone())?),
            DriverConfig::Sip(sip) => sip_driver(name, sip, config, &self.voice).await?,
        })
    }

    async fn shared_log(&self) -> anyhow::Result<Arc<dyn Driver>> {
        let mut shared = self.shared_log.lock().await;
        if let Some(driver) = shared.as_ref() {
            return Ok(driver.clone());
        }
        let driver: Arc<dyn Driver> =
            Arc::new(open_log(&self.config.delivery.log_path, &self.config, &self.voice).await?);
        *shared = Some(driver.clone());
        Ok(driver)
    }
}

/// A new control for a rebuilt route that keeps the old one's pause or drain
/// (a drain of the old driver is a pause of the new: it never started).
fn carried_over(old: &RouteControl) -> RouteControl {
    let control = RouteControl::default();
    match old.state() {
        RouteState::Active => {}
        RouteState::Draining | RouteState::Paused => {
            control.set(RouteState::Paused);
        }
    }
    control
}

/// A `log` driver that also writes voice prompts into `delivery.voice_dir`.
async fn open_log(path: &str, config: &Config, voice: &Arc<Prompter>) -> anyhow::Result<LogDriver> {
    let driver = LogDriver::open(path)
        .await
        .with_context(|| format!("opening the delivery log {path}"))?;
    // Not fatal: the embedded default runs without espeak-ng and logs voice OTPs
    // without audio, saying why in each line.
    if let Err(e) = voice.check().await {
        tracing::warn!(error = %e, "voice OTPs will be logged without audio");
    }
    Ok(driver.with_voice_audio(voice.clone(), &config.delivery.voice_dir))
}

/// A `sip` route: its calls need espeak-ng, and its longest attempt must fit in a
/// job's lease (or another worker would claim the job mid-call and ring twice).
async fn sip_driver(
    name: &str,
    table: &crate::delivery::voice::sip::SipConfig,
    config: &Config,
    voice: &Arc<Prompter>,
) -> anyhow::Result<Arc<dyn Driver>> {
    let driver = SipDriver::new(name, table, &config.voice, voice.clone())
        .with_context(|| format!("route {name}: invalid [routes.sip]"))?;
    voice
        .check()
        .await
        .with_context(|| format!("route {name}: voice calls need espeak-ng"))?;
    let longest = driver.longest_attempt();
    anyhow::ensure!(
        Duration::from_secs(config.delivery.lease_seconds) > longest,
        "route {name}: a call attempt can take up to {} s (2 x voice.render_timeout_ms + \
         ring_timeout_seconds + max_call_seconds + 64 s of SIP timers), longer than \
         delivery.lease_seconds ({}); raise lease_seconds above it or shorten the call settings",
        longest.as_secs(),
        config.delivery.lease_seconds
    );
    Ok(Arc::new(driver))
}
