//! Routing: an ordered list of routes per channel, each with the destination
//! prefixes it serves, as configuration.
//!
//! For each message the router takes the routes whose prefixes match the
//! destination (a route without prefixes matches every number), in configured
//! order, skips those that are not ready (no bind up), and hands the message to
//! the first; when that one answers `Retry`, the next matching route gets it in the
//! same attempt (failover). No matching route is a permanent failure (refunded):
//! the configuration has no way to reach that number.

use std::sync::Arc;

use otp_store::ClaimedJob;

use super::{DeliveryOutcome, Driver, RouteHealth};

/// One route of a channel.
pub struct Route {
    pub name: String,
    /// E.164 prefixes such as `+977984`; empty means every destination.
    pub prefixes: Vec<String>,
    pub driver: Arc<dyn Driver>,
}

impl Route {
    fn serves(&self, e164: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| e164.starts_with(p.as_str()))
    }
}

/// The driver of a channel with several routes.
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Router {
        Router { routes }
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
        "router"
    }

    fn capacity(&self) -> usize {
        self.routes
            .iter()
            .map(|r| r.driver.capacity())
            .sum::<usize>()
            .max(1)
    }

    fn is_ready(&self) -> bool {
        self.routes.iter().any(|r| r.driver.is_ready())
    }

    fn health(&self) -> Vec<RouteHealth> {
        self.routes.iter().flat_map(|r| r.driver.health()).collect()
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        let candidates: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| r.serves(&job.otp.e164))
            .collect();
        if candidates.is_empty() {
            return DeliveryOutcome::Failed {
                error: "no route serves this destination".into(),
            };
        }
        // Ready routes first, in order; routes that are down still get a try last.
        let (ready, down): (Vec<&Route>, Vec<&Route>) =
            candidates.into_iter().partition(|r| r.driver.is_ready());
        let mut errors = Vec::new();
        for route in ready.into_iter().chain(down) {
            let outcome = route.driver.deliver(job).await;
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
        for r in &self.routes {
            r.driver.shutdown().await;
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
