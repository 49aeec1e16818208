//! Building and running the application, separate from `main` so tests run the
//! real thing on port 0: `Application::build(config).await?.run_until_stopped(shutdown)`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use otp_domain::vault::CodeVault;
use otp_store::{SharedStore, StoreError, StoreOptions};

use crate::auth::{KeyCache, LastUsed, issue_key};
use crate::config::Config;
use crate::delivery::voice::Prompter;
use crate::delivery::{Deliveries, Policy};
use crate::metrics::Metrics;
use crate::outbox::Worker;
use crate::state::{AppState, NewJobs};
use crate::throttle::{ListSlots, VerifyLimiter};
use crate::webhooks::{WebhookDeliveries, WebhookPolicy, WebhookSender};

/// A configured, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    /// The operator's listener, when `/metrics`, `/readyz`, the documents and
    /// the admin API are served apart from the public API.
    admin_listener: Option<TcpListener>,
    state: AppState,
    first_key: Option<String>,
    retention: crate::retention::Retention,
}

/// Opens the store the configuration names, for commands that never read or
/// write a code (its code keys are throwaway ones; the server uses [`open_store_with`]).
pub async fn open_store(config: &Config) -> anyhow::Result<SharedStore> {
    open_store_with(config, Arc::new(CodeVault::ephemeral())).await
}

/// Opens the store the configuration names, keeping codes under `vault`.
pub async fn open_store_with(
    config: &Config,
    vault: Arc<CodeVault>,
) -> anyhow::Result<SharedStore> {
    let options = StoreOptions {
        max_batch: config.store.max_batch,
        connections: config.store.connections,
        list_connections: config.store.list_connections,
        list_timeout: Some(Duration::from_millis(config.store.list_timeout_ms)),
        vault,
        limits: otp_store::SendLimits {
            low_balance: config.webhooks.low_balance_thresholds(),
            ..config.limits.send_limits(config.mode)
        },
    };
    otp_store::open(config.database_url.expose(), &options)
        .await
        .with_context(|| format!("opening the store at {}", config.database_for_logs()))
}

impl Application {
    /// Opens the store (applying migrations), seeds the demo account on an empty
    /// store, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let tz = config.timezone()?;
        let vault = crate::codes::load_vault(&config).context("loading the code keys")?;
        let retention = crate::retention::Retention::from_config(&config)?;
        let users = crate::users::UserAuth::load(&config).context("loading the login settings")?;
        let store = open_store_with(&config, Arc::new(vault)).await?;
        let first_key = if config.creates_demo_account() {
            seed_default_account(&store, &config).await?
        } else {
            None
        };
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let admin_listener = match admin_address(&config) {
            Some(address) => Some(
                TcpListener::bind(&address)
                    .await
                    .with_context(|| format!("binding the admin listener {address}"))?,
            ),
            None => None,
        };
        // Refused now rather than at the first request.
        trusted_proxies(&config)?;
        let metrics = Arc::new(Metrics::default());
        if let Some(problem) = config.guard.problems().into_iter().next() {
            anyhow::bail!("invalid [guard] settings: {problem}");
        }
        let guard = crate::guard::Guard::new(
            &config.guard,
            &config.alerts,
            &config.webhooks,
            tz,
            store.clone(),
            metrics.clone(),
        )
        .context("building the pumping guard")?;
        let voice = Arc::new(Prompter::new(&config.voice).context("invalid [voice] settings")?);
        let runtime = Arc::new(
            crate::control::Runtime::start(
                &config,
                store.clone(),
                metrics.clone(),
                voice.clone(),
                guard.clone(),
            )
            .await?,
        );
        let drivers = Arc::new(runtime.drivers());
        let verify_limits = Arc::new(VerifyLimiter::new(config.verify.limits()));
        let list_slots = Arc::new(ListSlots::new(
            config.api.max_concurrent_lists,
            Duration::from_millis(config.api.list_wait_ms),
        ));
        let state = AppState::new(crate::state::Shared {
            store,
            config: Arc::new(config),
            tz,
            drivers,
            metrics,
            last_used: Arc::new(LastUsed::default()),
            key_cache: Arc::new(KeyCache::default()),
            new_jobs: Arc::new(NewJobs::default()),
            voice,
            users: Arc::new(users),
            verify_limits,
            list_slots,
            runtime,
            guard,
        });
        Ok(Application {
            listener,
            admin_listener,
            state,
            first_key,
            retention,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin listener's address, when there is one (see `admin_listen`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// The key of the demo account, when this start created it; shown once.
    pub fn first_key(&self) -> Option<&str> {
        self.first_key.as_deref()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops taking requests, lets
    /// deliveries in flight finish and records them.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let retention = self.retention;
        let state = self.state;
        let config = state.config.clone();
        let drivers = state.drivers.clone();
        let policy = Policy {
            lease: Duration::from_secs(config.delivery.lease_seconds.max(1)),
            give_up_after: Duration::from_secs(config.delivery.give_up_after_seconds),
            claim_batch: config.delivery.claim_batch.max(1),
            poll_interval: Duration::from_millis(config.delivery.poll_interval_ms.max(10)),
        };
        let node = config.node_name();
        let webhook_policy = WebhookPolicy::from_config(&config.webhooks);
        let webhook_sender = WebhookSender::new(webhook_policy.clone(), state.tz)?;
        // Every task holds a clone of the token before it is spawned, so a stop
        // is seen however late a task starts.
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for (channel, driver) in drivers.iter() {
            let deliveries = Worker::new(Deliveries {
                store: state.store.clone(),
                channel: *channel,
                driver: driver.clone(),
                policy: policy.clone(),
                node: node.clone(),
                metrics: state.metrics.clone(),
            });
            state.new_jobs.set_handover(
                *channel,
                crate::delivery::Handover {
                    handoff: deliveries.handoff(),
                    node: node.clone(),
                    lease: policy.lease,
                },
            );
            workers.push(tokio::spawn(deliveries.run(
                stop.clone(),
                policy.poll_interval,
                Some(state.new_jobs.for_channel(*channel).clone()),
            )));
        }
        let fallbacks = tokio::spawn(crate::delivery::fallback::scan_loop(
            state.store.clone(),
            state.new_jobs.voice.clone(),
            state.metrics.clone(),
            policy.poll_interval,
            stop.clone(),
        ));
        let flusher = tokio::spawn(flush_last_used(state.clone(), stop.clone()));
        let measurer = tokio::spawn(crate::control::measure_loop(
            state.runtime.clone(),
            stop.clone(),
        ));
        let purger = tokio::spawn(crate::retention::purge_loop(
            state.store.clone(),
            retention,
            stop.clone(),
        ));
        let webhooks = tokio::spawn(
            Worker::new(WebhookDeliveries {
                store: state.store.clone(),
                sender: webhook_sender,
                node: node.clone(),
                metrics: state.metrics.clone(),
            })
            .run(stop.clone(), webhook_policy.poll_interval, None),
        );
        let guard = tokio::spawn(state.guard.clone().run(stop.clone()));
        let expiry_sweep = tokio::spawn(crate::webhooks::sweep_loop(
            state.store.clone(),
            webhook_policy,
            stop.clone(),
        ));

        let limits = connection_limits(&config, self.admin_listener.is_some())?;
        tracing::info!(
            address = %self.listener.local_addr()?,
            admin_address = %self
                .admin_listener
                .as_ref()
                .map(|l| l.local_addr().map(|a| a.to_string()).unwrap_or_default())
                .unwrap_or_else(|| "(the public listener)".to_owned()),
            max_connections = limits.max_connections,
            max_connections_per_client = limits.max_connections_per_client,
            store = state.store.backend(),
            database = %config.database_for_logs(),
            node = %node,
            "otpgate is serving"
        );
        // One shutdown for both listeners.
        let shutdown = futures_util::FutureExt::shared(Box::pin(shutdown));
        match self.admin_listener {
            None => {
                let pages = crate::console::router().merge(crate::console::operator_router());
                let app = crate::api::router(pages, state.clone());
                crate::server::serve(self.listener, app, limits, state.metrics.clone(), shutdown)
                    .await;
            }
            Some(admin_listener) => {
                let admin_limits = crate::server::ConnectionLimits {
                    max_connections: ADMIN_MAX_CONNECTIONS,
                    ..limits.clone()
                };
                tokio::join!(
                    crate::server::serve(
                        self.listener,
                        crate::api::public_router(crate::console::router(), state.clone()),
                        limits,
                        state.metrics.clone(),
                        shutdown.clone(),
                    ),
                    crate::server::serve(
                        admin_listener,
                        crate::api::admin_router(
                            crate::console::router().merge(crate::console::operator_router()),
                            state.clone(),
                        ),
                        admin_limits,
                        state.metrics.clone(),
                        shutdown,
                    ),
                );
            }
        }

        tracing::info!("shutting down: finishing deliveries in flight");
        stop.cancel();
        for w in workers {
            let _ = w.await;
        }
        for (_, driver) in drivers.iter() {
            driver.shutdown().await;
        }
        let _ = fallbacks.await;
        let _ = flusher.await;
        let _ = measurer.await;
        let _ = purger.await;
        let _ = webhooks.await;
        let _ = expiry_sweep.await;
        let _ = guard.await;
        if let Err(e) = state.last_used.flush(&state.store).await {
            tracing::warn!(error = %e, "could not record key use at shutdown");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Connections the admin listener holds at once: scrapes, probes and an
/// operator's tools, kept apart from the public listener's cap so a flood there
/// does not blind monitoring.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Descriptors kept free besides those counted from the configuration: the
/// listeners, log files, the SQLite files, DNS, refusals being answered.
const SPARE_DESCRIPTORS: u64 = 64;

/// Where the admin listener binds: `admin_listen` when set (empty: no admin
/// listener), else `127.0.0.1:9091` in production and none in development.
pub fn admin_address(config: &Config) -> Option<String> {
    match (&config.admin_listen, config.mode) {
        (Some(address), _) if address.trim().is_empty() => None,
        (Some(address), _) => Some(address.clone()),
        (None, crate::config::Mode::Production) => Some("127.0.0.1:9091".to_owned()),
        (None, crate::config::Mode::Development) => None,
    }
}

/// `api.trusted_proxies`, parsed.
fn trusted_proxies(config: &Config) -> anyhow::Result<Arc<[crate::server::Cidr]>> {
    config
        .api
        .trusted_proxies
        .iter()
        .map(|c| {
            c.parse()
                .map_err(|e| anyhow::anyhow!("api.trusted_proxies: {e}"))
        })
        .collect()
}

/// File descriptors the rest of the server may need at once: the store's
/// connections (the list pool's too), carrier binds (two sockets each when
/// transmitter and receiver are separate), outgoing HTTP (webhooks, HTTP carriers), the
/// admin listener's connections and some spare.
fn reserved_descriptors(config: &Config, admin_listener: bool) -> u64 {
    use crate::delivery::settings::DriverConfig;
    let mut reserved =
        (config.store.connections + config.store.list_connections) as u64 + 2 + SPARE_DESCRIPTORS;
    reserved += config.webhooks.concurrency as u64;
    for route in &config.routes {
        match &route.driver {
            DriverConfig::Smpp(s) => {
                let sockets = if s.bind_mode == "transmitter_receiver" {
                    2
                } else {
                    1
                };
                reserved += (s.binds.max(1) * sockets) as u64
            }
            DriverConfig::Sparrow(_)
            | DriverConfig::Aakash(_)
            | DriverConfig::Http(_)
            | DriverConfig::TingTing(_) => reserved += config.delivery.concurrency as u64,
            DriverConfig::Log { .. } | DriverConfig::Sip(_) => {}
        }
    }
    if admin_listener {
        reserved += ADMIN_MAX_CONNECTIONS as u64;
    }
    reserved
}

/// The edge's limits from `[api]`, the connection cap lowered to what the
/// open-file limit leaves room for.
fn connection_limits(
    config: &Config,
    admin_listener: bool,
) -> anyhow::Result<crate::server::ConnectionLimits> {
    let nofile = crate::server::open_file_limit();
    let reserved = reserved_descriptors(config, admin_listener);
    let max_connections =
        crate::server::effective_max_connections(config.api.max_connections, nofile, reserved);
    if max_connections < config.api.max_connections {
        tracing::warn!(
            open_file_limit = nofile.unwrap_or_default(),
            reserved,
            max_connections,
            "the open-file limit lowers api.max_connections; raise it (ulimit -n, LimitNOFILE) for more"
        );
    }
    Ok(crate::server::ConnectionLimits {
        header_read_timeout: Duration::from_secs(config.api.header_read_timeout_seconds.max(1)),
        max_header_bytes: config.api.max_header_bytes,
        request_timeout: Duration::from_secs(config.api.request_timeout_seconds.max(1)),
        max_connections,
        max_connections_per_client: config.api.max_connections_per_client,
        trusted_proxies: trusted_proxies(config)?,
    })
}

/// Creates the `default` account and its key when the store has no account.
async fn seed_default_account(
    store: &SharedStore,
    config: &Config,
) -> anyhow::Result<Option<String>> {
    if !store.list_accounts().await?.is_empty() {
        return Ok(None);
    }
    let account = match store
        .create_account(
            "default",
            config.demo.sms_credits,
            config.demo.phone_credits,
        )
        .await
    {
        Ok(a) => a,
        // Another node seeded it first.
        Err(StoreError::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let key = issue_key(account.id, Some("created on first start".into()));
    store.create_key(key.record).await?;
    Ok(Some(key.plaintext))
}

async fn flush_last_used(state: AppState, stop: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        if let Err(e) = state.last_used.flush(&state.store).await {
            tracing::warn!(error = %e, "could not record key use; will retry");
        }
    }
}

/// Applies `new` (a reloaded configuration file) to the running server:
/// routes, limits and the log level. Refused as a whole, changing nothing,
/// when the file has a problem or a new route cannot be started. Returns
/// what was done, for the log.
pub async fn reload(state: &AppState, new: Config) -> anyhow::Result<String> {
    let problems = crate::check::problems(&new);
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("; "));
    }
    let lease = std::time::Duration::from_secs(state.config.delivery.lease_seconds.max(1));
    let (kept, started, stopped) = state.runtime.apply(&new, &state.new_jobs, lease).await?;
    let running = &state.config;
    state.store.set_send_limits(otp_store::SendLimits {
        low_balance: running.webhooks.low_balance_thresholds(),
        ..new.limits.send_limits(running.mode)
    });
    let log = match crate::telemetry::reload_level(&new.log.level) {
        Ok(filter) => format!("log filter {filter}"),
        Err(e) => format!("log level unchanged ({e})"),
    };
    Ok(format!(
        "routes: {kept} kept, {started} started, {stopped} stopping; routing and limits applied; {log}"
    ))
}
