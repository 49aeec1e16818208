//! Routing: an ordered list of routes per channel, each with the destination
//! prefixes it serves, as configuration.
//!
//! For each message the router takes the routes whose prefixes match the
//! destination (a route without prefixes matches every number), in configured
//! order, leaves out those an operator paused or is draining, and lets the
//! [`Balancer`] order the rest: the route its weights and measures pick
//! first, then the other healthy ones, the demoted ones, and those that are
//! not ready (no bind up) last (see [`super::balance`]). The message goes to
//! the first; when that one answers `Retry`, the next gets it in the same
//! attempt (failover). No matching route is a permanent failure (refunded):
//! the configuration has no way to reach that number.
//!
//! The route list can be replaced while the server runs ([`Router::replace`],
//! on `SIGHUP`): deliveries already started finish on the routes they began
//! on. A channel with no route configured delivers through its fallback
//! driver (the `log` driver) under that driver's name.
//!
//! A route delivers under the account's own sender ID on it when the
//! account has one ([`ClaimedJob::sender_for`], [`Driver::deliver_as`]); a
//! failover to another route uses that route's sender, the account's or the
//! configured one.
//!
//! ## Pause, resume, drain
//! Each route has a [`RouteControl`]. A paused route takes no new message; the
//! other routes serving the destination take over, and when none is left for
//! a destination its messages wait: when every route of the channel is paused
//! (or down) the router is not ready and the dispatcher claims nothing, so no
//! attempt is spent; when other routes of the channel still run, a message
//! only a paused route serves is put back as a transient failure and retried
//! with the usual backoff (each such try counts as an attempt, and the OTP
//! fails when `delivery.give_up_after_seconds` runs out, as for a carrier
//! that is down). A draining route takes no new message either and becomes
//! paused once its deliveries in flight are done.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use otp_domain::sender::SenderId;
use otp_store::ClaimedJob;
use tokio_util::sync::CancellationToken;

use super::balance::Balancer;
use super::{DeliveryOutcome, Driver, RouteHealth};

/// What an operator set a route to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    /// Takes messages.
    Active,
    /// Takes no new message; becomes `Paused` when none is in flight.
    Draining,
    /// Takes no message.
    Paused,
}

impl RouteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteState::Active => "active",
            RouteState::Draining => "draining",
            RouteState::Paused => "paused",
        }
    }

    fn from_u8(v: u8) -> RouteState {
        match v {
            1 => RouteState::Draining,
            2 => RouteState::Paused,
            _ => RouteState::Active,
        }
    }
}

/// A route's operator state and its deliveries in flight.
#[derive(Debug, Default)]
pub struct RouteControl {
    state: AtomicU8,
    in_flight: AtomicUsize,
}

impl RouteControl {
    /// The route's state; a draining route with nothing in flight is paused.
    pub fn state(&self) -> RouteState {
        let state = RouteState::from_u8(self.state.load(Ordering::Acquire));
        if state == RouteState::Draining && self.in_flight() == 0 {
            // Only a drain still in place becomes a pause, not a resume
            // that came in between.
            let _ = self.state.compare_exchange(
                RouteState::Draining as u8,
                RouteState::Paused as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            return RouteState::from_u8(self.state.load(Ordering::Acquire));
        }
        state
    }

    /// Pauses (`Paused`), drains (`Draining`) or resumes (`Active`) the route.
    /// Draining a paused route leaves it paused.
    pub fn set(&self, state: RouteState) -> RouteState {
        if state == RouteState::Draining {
            let _ = self.state.compare_exchange(
                RouteState::Active as u8,
                RouteState::Draining as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        } else {
            self.state.store(state as u8, Ordering::Release);
        }
        self.state()
    }

    /// Deliveries started on the route and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn takes_new(&self) -> bool {
        self.state() == RouteState::Active
    }
}

/// Counts one delivery in flight for as long as it lives.
struct InFlight<'a>(&'a RouteControl);

impl<'a> InFlight<'a> {
    fn start(control: &'a RouteControl) -> Self {
        control.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(control)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One route of a channel.
pub struct Route {
    pub name: String,
    /// E.164 prefixes such as `+977984`; empty means every destination.
    pub prefixes: Vec<String>,
    pub driver: Arc<dyn Driver>,
    /// Pause, drain, and the deliveries in flight.
    pub control: Arc<RouteControl>,
    /// The `[[routes]]` table it was built from; a reload keeps the route
    /// (and its binds) when the new table is the same.
    pub settings: super::settings::RouteConfig,
}

impl Route {
    fn serves(&self, e164: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| e164.starts_with(p.as_str()))
    }
}

/// The routes of a channel at one moment.
#[derive(Clone)]
pub struct Table {
    pub routes: Vec<Arc<Route>>,
    /// What delivers when no route is configured.
    pub fallback: Option<Arc<dyn Driver>>,
}

/// The driver of a channel: its routes, replaceable while running.
pub struct Router {
    // std RwLock: held only to clone the Arc, never across an await.
    table: RwLock<Arc<Table>>,
    /// Shared by the channels' routers: it keeps the measures of every route.
    balancer: Arc<Balancer>,
}

impl Router {
    pub fn new(table: Table, balancer: Arc<Balancer>) -> Router {
        Router {
            table: RwLock::new(Arc::new(table)),
            balancer,
        }
    }

    /// The routes now in use.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().expect("router table poisoned").clone()
    }

    /// Puts `table` in use and returns the one it replaces.
    pub fn replace(&self, table: Table) -> Arc<Table> {
        std::mem::replace(
            &mut *self.table.write().expect("router table poisoned"),
            Arc::new(table),
        )
    }

    /// The route named `name`, if this channel has it.
    pub fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.table().routes.iter().find(|r| r.name == name).cloned()
    }
}

fn named(route: &Route, outcome: DeliveryOutcome) -> DeliveryOutcome {
    match outcome {
        routed @ DeliveryOutcome::Routed { .. } => routed,
        other => DeliveryOutcome::Routed {
            route: route.name.clone(),
            outcome: Box::new(other),
        },
    }
}

fn is_retry(outcome: &DeliveryOutcome) -> bool {
    match outcome {
        DeliveryOutcome::Retry { .. } => true,
        DeliveryOutcome::Routed { outcome, .. } => is_retry(outcome),
        _ => false,
    }
}

#[async_trait::async_trait]
impl Driver for Router {
    fn name(&self) -> &'static str {
        match &self.table().fallback {
            Some(driver) if self.table().routes.is_empty() => driver.name(),
            _ => "router",
        }
    }

    fn capacity(&self) -> usize {
        let table = self.table();
        let routes: usize = table.routes.iter().map(|r| r.driver.capacity()).sum();
        let fallback = table.fallback.as_ref().map_or(0, |d| d.capacity());
        (routes + fallback).max(1)
    }

    fn is_ready(&self) -> bool {
        let table = self.table();
        if table.routes.is_empty() {
            return table.fallback.as_ref().is_some_and(|d| d.is_ready());
        }
        table
            .routes
            .iter()
            .any(|r| r.control.takes_new() && r.driver.is_ready())
    }

    fn health(&self) -> Vec<RouteHealth> {
        let table = self.table();
        let mut health: Vec<RouteHealth> = table
            .routes
            .iter()
            .flat_map(|r| {
                let state = r.control.state();
                let mut health = r.driver.health();
                if health.is_empty() && state != RouteState::Active {
                    // An HTTP route keeps no connection to show, but its pause
                    // must show.
                    health.push(RouteHealth {
                        route: r.name.clone(),
                        connection: String::new(),
                        status: "ready".into(),
                        detail: None,
                        in_flight: r.control.in_flight(),
                        state: "active",
                    });
                }
                health.into_iter().map(move |mut h| {
                    h.state = state.as_str();
                    h
                })
            })
            .collect();
        if table.routes.is_empty()
            && let Some(d) = &table.fallback
        {
            health.extend(d.health());
        }
        health
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        self.deliver_watched(job, None, &CancellationToken::new())
            .await
    }

    /// Routes the job; `sender` is ignored (each route uses the account's own
    /// sender on it) and `unwanted` is handed to the route's driver.
    async fn deliver_watched(
        &self,
        job: &ClaimedJob,
        _sender: Option<&SenderId>,
        unwanted: &CancellationToken,
    ) -> DeliveryOutcome {
        let table = self.table();
        if table.routes.is_empty() {
            return match &table.fallback {
                Some(driver) => driver.deliver_watched(job, None, unwanted).await,
                None => DeliveryOutcome::Failed {
                    error: "no route serves this destination".into(),
                },
            };
        }
        let candidates: Vec<&Arc<Route>> = table
            .routes
            .iter()
            .filter(|r| r.serves(job.otp.number.as_str()))
            .collect();
        if candidates.is_empty() {
            return DeliveryOutcome::Failed {
                error: "no route serves this destination".into(),
            };
        }
        let (open, held): (Vec<&Arc<Route>>, Vec<&Arc<Route>>) =
            candidates.into_iter().partition(|r| r.control.takes_new());
        if open.is_empty() {
            let names: Vec<&str> = held.iter().map(|r| r.name.as_str()).collect();
            return DeliveryOutcome::Retry {
                error: format!(
                    "every route serving this number is paused: {}",
                    names.join(", ")
                ),
            };
        }
        // Routes that are down still get a try, last.
        let order = self.balancer.order(&open, |r| r.driver.is_ready());
        let mut errors = Vec::new();
        for route in order {
            let outcome = {
                let _counted = InFlight::start(&route.control);
                route
                    .driver
                    .deliver_watched(job, job.sender_for(&route.name), unwanted)
                    .await
            };
            if !is_retry(&outcome) {
                return named(route, outcome);
            }
            errors.push(format!("{}: {}", route.name, retry_error(&outcome)));
        }
        DeliveryOutcome::Retry {
            error: errors.join("; "),
        }
    }

    async fn shutdown(&self) {
        let table = self.table();
        for r in &table.routes {
            r.driver.shutdown().await;
        }
        if let Some(d) = &table.fallback {
            d.shutdown().await;
        }
    }
}

fn retry_error(outcome: &DeliveryOutcome) -> &str {
    match outcome {
        DeliveryOutcome::Retry { error } => error,
        DeliveryOutcome::Routed { outcome, .. } => retry_error(outcome),
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::{RouteControl, RouteState};

    #[test]
    fn a_drain_with_nothing_in_flight_is_a_pause_and_a_resume_undoes_it() {
        let control = RouteControl::default();
        assert_eq!(control.state(), RouteState::Active);
        assert_eq!(control.set(RouteState::Draining), RouteState::Paused);
        assert_eq!(control.set(RouteState::Active), RouteState::Active);
        assert_eq!(control.set(RouteState::Paused), RouteState::Paused);
        assert_eq!(
            control.set(RouteState::Draining),
            RouteState::Paused,
            "draining a paused route leaves it paused"
        );
    }

    #[test]
    fn a_draining_route_stays_draining_while_a_delivery_is_in_flight() {
        let control = RouteControl::default();
        let counted = super::InFlight::start(&control);
        assert_eq!(control.set(RouteState::Draining), RouteState::Draining);
        drop(counted);
        assert_eq!(control.state(), RouteState::Paused);
    }
}
