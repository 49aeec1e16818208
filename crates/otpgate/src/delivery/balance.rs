//! Balancing: which of the routes serving a destination takes a message, by
//! configured weight and by how well each route has been delivering.
//!
//! ## Weights
//! Routes with a `weight` share the messages of the destinations they serve
//! in proportion to it, by smooth weighted round-robin (the picks of weights
//! 3 and 1 go A A B A, A A B A, ...: exact over every cycle, never a burst).
//! Among routes none of which has a weight, the first in configured order
//! takes every message (today's order of preference). A route without a
//! weight beside routes with one counts as weight 1; weight 0 makes a
//! standby, which only takes messages on failover or when no weighted route
//! is left.
//!
//! ## Demotion
//! Every `[routing] refresh_ms`, each node reads every route's window from
//! the store ([`otp_store::routing`]: its newest `window` finished OTPs,
//! delivered or not, and the median time from acceptance to the receipt). A
//! route with at least `min_results` results in its window is judged against
//! its peers, the judged routes of its channel that serve some destination
//! it serves: it is demoted when its delivery rate is under `demote_below`
//! times the best peer's, or when its median receipt time is above
//! `slow_factor` times the fastest peer's and at least `slow_after_seconds`.
//! The best route of a group is never demoted, so a destination always has
//! somewhere to go. A demoted route takes `probe_percent` of the messages
//! that healthy peers could take (every 20th at 5%), so its window keeps
//! filling; when the probes bring its rate back within `demote_below` of the
//! best, the next refresh promotes it. Since the windows are read from the
//! shared database, every node sees the same demotions.
//!
//! Whatever the pick, the other routes follow it in the failover order: the
//! healthy ones in configured order, then the demoted ones, then the routes
//! whose connection is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use otp_domain::channel::Channel;
use otp_store::routing::RouteWindow;
use serde::Deserialize;

use super::router::Route;

/// `[routing]`: how routes are measured and demoted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// How many finished OTPs of a route (its newest) are measured.
    pub window: u32,
    /// A route whose delivery rate is under this share of its best peer's
    /// is demoted (0.5: under half); 0 turns the rate rule off.
    pub demote_below: f64,
    /// Results a route needs in its window before it is judged.
    pub min_results: u32,
    /// Percent of the messages a demoted route still takes, to measure it.
    pub probe_percent: u32,
    /// A route whose median receipt time is above this many times its
    /// fastest peer's is demoted (and at least `slow_after_seconds`); 0 turns
    /// the latency rule off.
    pub slow_factor: f64,
    /// The latency rule leaves alone a route whose median receipt time is
    /// under this.
    pub slow_after_seconds: u64,
    /// An OTP sent this long ago without a receipt counts as a failure.
    pub no_receipt_after_seconds: u64,
    /// How often each node reads the windows from the store.
    pub refresh_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            window: 200,
            demote_below: 0.5,
            min_results: 20,
            probe_percent: 5,
            slow_factor: 3.0,
            slow_after_seconds: 30,
            no_receipt_after_seconds: 300,
            refresh_ms: 5_000,
        }
    }
}

impl RoutingConfig {
    /// What is wrong with the settings, if anything, naming the setting.
    pub fn problem(&self) -> Option<String> {
        if self.window == 0 || self.window > 10_000 {
            return Some("routing.window must be between 1 and 10000".into());
        }
        if self.min_results > self.window {
            return Some("routing.min_results cannot be above routing.window".into());
        }
        if !(0.0..=1.0).contains(&self.demote_below) {
            return Some("routing.demote_below must be between 0 and 1".into());
        }
        if self.probe_percent > 50 {
            return Some("routing.probe_percent must be between 0 and 50".into());
        }
        if !(self.slow_factor == 0.0 || (1.0..=1000.0).contains(&self.slow_factor)) {
            return Some("routing.slow_factor must be 0 (off) or between 1 and 1000".into());
        }
        if self.refresh_ms < 100 {
            return Some("routing.refresh_ms must be at least 100".into());
        }
        None
    }
}

/// What the balancer knows of one route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measure {
    /// Its window, as last read.
    pub window: RouteWindow,
    /// Whether it is demoted now.
    pub demoted: bool,
}

/// One route as demotion sees it.
pub struct Facts<'a> {
    pub channel: Channel,
    /// Its prefixes; empty: every destination.
    pub prefixes: &'a [String],
    pub window: &'a RouteWindow,
}

/// Whether two routes serve some destination in common.
fn overlap(a: &[String], b: &[String]) -> bool {
    a.is_empty()
        || b.is_empty()
        || a.iter().any(|p| {
            b.iter()
                .any(|q| p.starts_with(q.as_str()) || q.starts_with(p.as_str()))
        })
}

/// Which of `routes` are demoted (see the module doc), in their order.
pub fn demoted(settings: &RoutingConfig, routes: &[Facts<'_>]) -> Vec<bool> {
    let judged = |f: &Facts<'_>| f.window.results() >= settings.min_results.max(1);
    routes
        .iter()
        .map(|r| {
            if !judged(r) {
                return false;
            }
            let peers: Vec<&Facts<'_>> = routes
                .iter()
                .filter(|p| p.channel == r.channel && judged(p) && overlap(p.prefixes, r.prefixes))
                .collect();
            let rate = r.window.delivery_rate().unwrap_or(0.0);
            let best_rate = peers
                .iter()
                .filter_map(|p| p.window.delivery_rate())
                .fold(0.0, f64::max);
            if rate < settings.demote_below * best_rate {
                return true;
            }
            let (Some(median), true) = (r.window.median_receipt_ms, settings.slow_factor > 0.0)
            else {
                return false;
            };
            let fastest = peers
                .iter()
                .filter_map(|p| p.window.median_receipt_ms)
                .min()
                .unwrap_or(median);
            median >= settings.slow_after_seconds as i64 * 1000
                && median as f64 > settings.slow_factor * fastest as f64
        })
        .collect()
}

/// The picks of one node: measures per route, and the round-robin and probe
/// counters.
pub struct Balancer {
    /// `[routing]`, replaced on a reload ([`Balancer::set_settings`]).
    settings: RwLock<Arc<RoutingConfig>>,
    // std Mutex: held for one pick or one update, never across an await.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    measures: HashMap<String, Measure>,
    /// Smooth weighted round-robin: each route's current weight.
    current: HashMap<String, i64>,
    /// Picks that had a demoted route to probe, and probes made.
    probe_chances: u64,
    probes: u64,
}

impl Balancer {
    pub fn new(settings: RoutingConfig) -> Balancer {
        Balancer {
            settings: RwLock::new(Arc::new(settings)),
            state: Mutex::new(State::default()),
        }
    }

    /// `[routing]` now in force.
    pub fn settings(&self) -> Arc<RoutingConfig> {
        self.settings.read().expect("routing poisoned").clone()
    }

    /// Puts reloaded `[routing]` settings in force; the next measure and pick
    /// use them.
    pub fn set_settings(&self, settings: RoutingConfig) {
        *self.settings.write().expect("routing poisoned") = Arc::new(settings);
    }

    /// Takes the windows just read for `routes` and decides their demotion.
    pub fn update(&self, routes: &[(Channel, Vec<String>)], windows: Vec<RouteWindow>) {
        let facts: Vec<Facts<'_>> = routes
            .iter()
            .zip(&windows)
            .map(|((channel, prefixes), window)| Facts {
                channel: *channel,
                prefixes,
                window,
            })
            .collect();
        let demoted = demoted(&self.settings(), &facts);
        let mut state = self.state.lock().expect("balancer poisoned");
        let before = std::mem::take(&mut state.measures);
        for (window, demoted) in windows.into_iter().zip(demoted) {
            let was = before.get(&window.route).is_some_and(|m| m.demoted);
            if was != demoted {
                tracing::info!(
                    route = %window.route,
                    delivered = window.delivered,
                    failed = window.failed,
                    "route {}",
                    if demoted { "demoted" } else { "promoted" }
                );
            }
            state
                .measures
                .insert(window.route.clone(), Measure { window, demoted });
        }
    }

    /// What is known of route `name`.
    pub fn measure(&self, name: &str) -> Option<Measure> {
        let state = self.state.lock().expect("balancer poisoned");
        state.measures.get(name).cloned()
    }

    /// The order in which `open` (the routes serving a message that take new
    /// messages, in configured order) are tried: the pick first, then the
    /// failover order. `ready` tells whether a route's connection is up.
    pub fn order<'a>(
        &self,
        open: &[&'a Arc<Route>],
        ready: impl Fn(&Route) -> bool,
    ) -> Vec<&'a Arc<Route>> {
        let mut state = self.state.lock().expect("balancer poisoned");
        let (up, down): (Vec<&Arc<Route>>, Vec<&Arc<Route>>) =
            open.iter().copied().partition(|r| ready(r));
        let is_demoted = |r: &Route| state.measures.get(&r.name).is_some_and(|m| m.demoted);
        let (mut healthy, mut demoted): (Vec<&Arc<Route>>, Vec<&Arc<Route>>) =
            up.into_iter().partition(|r| !is_demoted(r));
        if healthy.is_empty() {
            healthy = std::mem::take(&mut demoted);
        }
        let mut order = Vec::with_capacity(open.len());
        let probe_percent = self.settings().probe_percent;
        if !demoted.is_empty() && probe_percent > 0 {
            state.probe_chances += 1;
            // Exactly probe_percent of the chances, spread evenly.
            let due = state.probe_chances * u64::from(probe_percent) / 100;
            if due > state.probes {
                let probe = demoted.remove((state.probes % demoted.len() as u64) as usize);
                state.probes += 1;
                order.push(probe);
            }
        }
        if order.is_empty() && !healthy.is_empty() {
            let weights: Vec<Option<u32>> = healthy.iter().map(|r| r.settings.weight).collect();
            let pick = pick_weighted(&mut state.current, &healthy, &weights);
            order.push(healthy.remove(pick));
        }
        order.extend(healthy);
        order.extend(demoted);
        order.extend(down);
        order
    }
}

/// The index of the route smooth weighted round-robin picks among `routes`
/// (see the module doc for routes without a weight), updating `current`.
fn pick_weighted(
    current: &mut HashMap<String, i64>,
    routes: &[&Arc<Route>],
    weights: &[Option<u32>],
) -> usize {
    if weights.iter().all(Option::is_none) {
        return 0;
    }
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w.unwrap_or(1))).collect();
    let total: i64 = weights.iter().sum();
    if total == 0 {
        return 0;
    }
    let mut best: Option<(usize, i64)> = None;
    for (i, (route, weight)) in routes.iter().zip(&weights).enumerate() {
        if *weight == 0 {
            continue;
        }
        let c = current.entry(route.name.clone()).or_default();
        *c += weight;
        if best.is_none_or(|(_, b)| *c > b) {
            best = Some((i, *c));
        }
    }
    let (pick, _) = best.expect("a route with a weight");
    *current.get_mut(&routes[pick].name).expect("counted above") -= total;
    pick
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::router::RouteControl;
    use crate::delivery::settings::{DriverConfig, RouteConfig};
    use crate::delivery::{DeliveryOutcome, Driver};

    /// A driver the balancer never calls: it only orders routes.
    struct Unused;

    #[async_trait::async_trait]
    impl Driver for Unused {
        fn name(&self) -> &'static str {
            "unused"
        }
        fn capacity(&self) -> usize {
            1
        }
        async fn deliver(&self, _: &otp_store::ClaimedJob) -> DeliveryOutcome {
            unreachable!("the balancer only orders routes")
        }
    }

    fn route(name: &str, weight: Option<u32>) -> Arc<Route> {
        let settings = RouteConfig {
            name: name.into(),
            channel: Channel::Text,
            prefixes: Vec::new(),
            weight,
            driver: DriverConfig::Log { log_path: None },
        };
        Arc::new(Route {
            name: name.into(),
            prefixes: Vec::new(),
            driver: Arc::new(Unused),
            control: Arc::new(RouteControl::default()),
            settings,
        })
    }

    fn window(route: &str, delivered: u32, failed: u32, median_s: Option<i64>) -> RouteWindow {
        RouteWindow {
            route: route.into(),
            delivered,
            failed,
            median_receipt_ms: median_s.map(|s| s * 1000),
        }
    }

    /// The first route of `n` orders.
    fn firsts(b: &Balancer, routes: &[Arc<Route>], n: usize) -> Vec<String> {
        let open: Vec<&Arc<Route>> = routes.iter().collect();
        (0..n)
            .map(|_| b.order(&open, |_| true)[0].name.clone())
            .collect()
    }

    #[test]
    fn weights_three_to_one_pick_smoothly_and_exactly() {
        let b = Balancer::new(RoutingConfig::default());
        let routes = [route("a", Some(3)), route("b", Some(1))];
        assert_eq!(
            firsts(&b, &routes, 8).join(""),
            "aabaaaba",
            "a a b a, then again"
        );
    }

    #[test]
    fn without_weights_the_first_route_takes_everything_and_the_rest_are_failover() {
        let b = Balancer::new(RoutingConfig::default());
        let routes = [route("a", None), route("b", None)];
        assert_eq!(firsts(&b, &routes, 3), ["a", "a", "a"]);
        let open: Vec<&Arc<Route>> = routes.iter().collect();
        let order: Vec<&str> = b
            .order(&open, |r| r.name != "a")
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(order, ["b", "a"], "a route that is down goes last");
        let order: Vec<&str> = b
            .order(&open, |_| false)
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(order, ["a", "b"], "every route down: each still gets a try");
    }

    #[test]
    fn weight_zero_is_a_standby_and_a_route_without_weight_beside_weighted_ones_counts_one() {
        let b = Balancer::new(RoutingConfig::default());
        let routes = [route("a", Some(0)), route("b", Some(2)), route("c", None)];
        let picks = firsts(&b, &routes, 6);
        assert_eq!(picks.iter().filter(|p| *p == "b").count(), 4);
        assert_eq!(picks.iter().filter(|p| *p == "c").count(), 2);
    }

    #[test]
    fn a_route_far_below_its_peers_is_demoted_and_probed_at_the_configured_share() {
        let settings = RoutingConfig {
            probe_percent: 10,
            ..RoutingConfig::default()
        };
        let b = Balancer::new(settings);
        let routes = [route("a", Some(1)), route("b", Some(1))];
        let every = vec![(Channel::Text, Vec::new()), (Channel::Text, Vec::new())];
        b.update(
            &every,
            vec![window("a", 40, 160, None), window("b", 190, 10, None)],
        );
        assert!(b.measure("a").unwrap().demoted);
        assert!(!b.measure("b").unwrap().demoted);
        let picks = firsts(&b, &routes, 100);
        assert_eq!(picks.iter().filter(|p| *p == "a").count(), 10);
        assert_eq!(picks[9], "a", "every tenth");
        // Its probes delivered: promoted at the next update.
        b.update(
            &every,
            vec![window("a", 120, 80, None), window("b", 190, 10, None)],
        );
        assert!(!b.measure("a").unwrap().demoted);
        assert_eq!(firsts(&b, &routes, 4).join(""), "abab");
    }

    #[test]
    fn demotion_needs_enough_results_and_a_peer_serving_the_same_numbers() {
        let s = RoutingConfig::default();
        let all: Vec<String> = Vec::new();
        let ntc = vec!["+977984".to_owned()];
        let ncell = vec!["+977980".to_owned()];
        let good = window("good", 100, 0, None);
        let bad = window("bad", 1, 99, None);
        let new = window("new", 0, 19, None);
        let fact = |prefixes, window| Facts {
            channel: Channel::Text,
            prefixes,
            window,
        };
        assert_eq!(
            demoted(&s, &[fact(&all, &good), fact(&all, &bad), fact(&all, &new)]),
            [false, true, false],
            "19 results are not enough to judge"
        );
        assert_eq!(
            demoted(&s, &[fact(&ntc, &good), fact(&ncell, &bad)]),
            [false, false],
            "no common destination: not peers"
        );
        let voice = Facts {
            channel: Channel::Voice,
            prefixes: &all,
            window: &bad,
        };
        assert_eq!(demoted(&s, &[fact(&all, &good), voice]), [false, false]);
        let everything_bad = window("also-bad", 0, 100, None);
        assert_eq!(
            demoted(&s, &[fact(&all, &bad), fact(&all, &everything_bad)]),
            [false, true],
            "the best of a group stays, however bad"
        );
    }

    #[test]
    fn a_route_much_slower_than_its_peers_is_demoted_past_the_floor() {
        let s = RoutingConfig::default();
        let all: Vec<String> = Vec::new();
        let fast = window("fast", 100, 0, Some(5));
        let slow = window("slow", 100, 0, Some(40));
        let sluggish = window("sluggish", 100, 0, Some(12));
        let fact = |window| Facts {
            channel: Channel::Text,
            prefixes: &all,
            window,
        };
        assert_eq!(
            demoted(&s, &[fact(&fast), fact(&slow), fact(&sluggish)]),
            [false, true, false],
            "12 s is over 3 x 5 s but under the 30 s floor"
        );
        let off = RoutingConfig {
            slow_factor: 0.0,
            ..RoutingConfig::default()
        };
        assert_eq!(demoted(&off, &[fact(&fast), fact(&slow)]), [false, false]);
    }

    #[test]
    fn settings_out_of_range_are_named() {
        assert_eq!(RoutingConfig::default().problem(), None);
        let bad = |s: RoutingConfig| s.problem().unwrap();
        assert!(
            bad(RoutingConfig {
                probe_percent: 60,
                ..RoutingConfig::default()
            })
            .contains("probe_percent")
        );
        assert!(
            bad(RoutingConfig {
                min_results: 300,
                ..RoutingConfig::default()
            })
            .contains("min_results")
        );
        assert!(
            bad(RoutingConfig {
                demote_below: 1.5,
                ..RoutingConfig::default()
            })
            .contains("demote_below")
        );
    }
}
