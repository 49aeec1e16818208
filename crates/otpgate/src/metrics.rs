//! Prometheus metrics, kept in process and rendered in the text exposition format
//! at `/metrics`.
//!
//! A small registry of our own rather than a metrics crate: the set of series is
//! small and fixed, and one uncontended mutex per update costs far less than a
//! request does.
//!
//! Every label value comes from a set the server chooses: our own enums, route
//! names from the configuration, and for HTTP requests the route template (one
//! `unmatched` for every path no route knows), the method as one of the nine
//! standard ones or `other` ([`method_label`]) and the status code. Nothing a
//! client sends becomes a label as it is, so no number of odd requests grows
//! the registry (`tests/api/edge.rs` checks it with junk methods and paths).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

struct Family {
    help: &'static str,
    kind: &'static str,
}

/// The registry; one per application.
#[derive(Default)]
pub struct Metrics {
    // std Mutex: held for a map update only, never across an await.
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, String), Histogram>>,
}

fn family(name: &str) -> Family {
    match name {
        "otpgate_http_requests_total" => Family {
            help: "HTTP requests answered, by route, method and status.",
            kind: "counter",
        },
        "otpgate_http_request_duration_seconds" => Family {
            help: "Time to answer an HTTP request, by route.",
            kind: "histogram",
        },
        "otpgate_http_refused_total" => Family {
            help: "Connections and requests the HTTP edge answered itself, by reason (connection_limit, client_connection_limit, request_timeout).",
            kind: "counter",
        },
        "otpgate_sends_total" => Family {
            help: "Send requests by channel and outcome (accepted, invalid, insufficient_credits, error).",
            kind: "counter",
        },
        "otpgate_deliveries_total" => Family {
            help: "Delivery attempts by channel, driver and outcome (sent, retry, failed).",
            kind: "counter",
        },
        "otpgate_accept_duration_seconds" => Family {
            help: "Time from a valid send request to its durable commit.",
            kind: "histogram",
        },
        "otpgate_delivery_duration_seconds" => Family {
            help: "Time a driver took to hand a message to its carrier.",
            kind: "histogram",
        },
        "otpgate_smpp_total" => Family {
            help: "SMPP events by route: bound, disconnected, bind_refused, connect_failed, submitted, throttled, rejected, submit_error, mo_message.",
            kind: "counter",
        },
        "otpgate_smpp_receipts_total" => Family {
            help: "Delivery receipts applied, by route and state (unmatched: no such message id).",
            kind: "counter",
        },
        "otpgate_accept_to_submit_seconds" => Family {
            help: "Time from accepting a send to the carrier accepting its submission, by route.",
            kind: "histogram",
        },
        "otpgate_accept_to_receipt_seconds" => Family {
            help: "Time from accepting a send to the carrier's delivery receipt for it, by route.",
            kind: "histogram",
        },
        "otpgate_route_up" => Family {
            help: "1 when a carrier connection is bound, by route and connection.",
            kind: "gauge",
        },
        "otpgate_route_in_flight" => Family {
            help: "Messages awaiting the carrier's answer (SMPP window in use), by route and connection.",
            kind: "gauge",
        },
        "otpgate_webhook_attempts_total" => Family {
            help: "Webhook delivery attempts by outcome (delivered; retry: failed, tried again later; gave_up: failed, the last one).",
            kind: "counter",
        },
        "otpgate_webhook_attempt_duration_seconds" => Family {
            help: "Time from starting a webhook POST to its answer or failure.",
            kind: "histogram",
        },
        "otpgate_queue_depth" => Family {
            help: "Delivery jobs waiting, by channel.",
            kind: "gauge",
        },
        _ => Family {
            help: "",
            kind: "untyped",
        },
    }
}

/// The `method` label of an HTTP request: one of the nine methods of RFC 9110
/// and RFC 5789, or `other` for any other token a client makes up.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Renders label pairs as `a="x",b="y"`, escaping values.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(64);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        // Escaped character by character: most values need none, and this is
        // on every request's path.
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

fn series(name: &str, suffix: &str, labels: &str) -> String {
    if labels.is_empty() {
        format!("{name}{suffix}")
    } else {
        format!("{name}{suffix}{{{labels}}}")
    }
}

impl Metrics {
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        let key = (name, labels(pairs));
        *self
            .counters
            .lock()
            .expect("metrics poisoned")
            .entry(key)
            .or_default() += 1;
    }

    pub fn observe(&self, name: &'static str, pairs: &[(&str, &str)], seconds: f64) {
        let key = (name, labels(pairs));
        let mut map = self.histograms.lock().expect("metrics poisoned");
        let h = map.entry(key).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The exposition text; `gauges` are values computed at scrape time.
    pub fn render(&self, gauges: &[(&'static str, String, f64)]) -> String {
        let mut out = String::new();
        let mut last = "";
        let mut header = |out: &mut String, name: &'static str| {
            if name != last {
                let f = family(name);
                let _ = writeln!(out, "# HELP {name} {}", f.help);
                let _ = writeln!(out, "# TYPE {name} {}", f.kind);
                last = name;
            }
        };
        for ((name, l), v) in self.counters.lock().expect("metrics poisoned").iter() {
            header(&mut out, name);
            let _ = writeln!(out, "{} {v}", series(name, "", l));
        }
        for ((name, l), h) in self.histograms.lock().expect("metrics poisoned").iter() {
            header(&mut out, name);
            let sep = if l.is_empty() { "" } else { "," };
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{l}{sep}le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{} {}", series(name, "_sum", l), h.sum);
            let _ = writeln!(out, "{} {}", series(name, "_count", l), h.count);
        }
        // Grouped by family: a family's HELP and TYPE appear once.
        let mut gauges: Vec<_> = gauges.iter().collect();
        gauges.sort_by_key(|(name, _, _)| *name);
        for (name, l, v) in gauges {
            header(&mut out, name);
            let _ = writeln!(out, "{} {v}", series(name, "", l));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_exposition_format() {
        let m = Metrics::default();
        m.inc(
            "otpgate_sends_total",
            &[("channel", "text"), ("outcome", "accepted")],
        );
        m.inc(
            "otpgate_sends_total",
            &[("channel", "text"), ("outcome", "accepted")],
        );
        m.observe("otpgate_accept_duration_seconds", &[], 0.003);
        let text = m.render(&[("otpgate_queue_depth", labels(&[("channel", "voice")]), 4.0)]);
        assert!(text.contains("# TYPE otpgate_sends_total counter"));
        assert!(text.contains("otpgate_sends_total{channel=\"text\",outcome=\"accepted\"} 2"));
        assert!(text.contains("otpgate_accept_duration_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("otpgate_accept_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("otpgate_accept_duration_seconds_count 1"));
        assert!(text.contains("otpgate_queue_depth{channel=\"voice\"} 4"));
    }

    #[test]
    fn methods_outside_the_standard_nine_are_one_label() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["FOO", "get", "X".repeat(15_000).as_str()] {
            let m = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "other", "{made_up:.20}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\")]), "a=\"x\\\"y\\\\\"");
        assert_eq!(
            labels(&[("a", "1\n2"), ("b", "plain")]),
            "a=\"1\\n2\",b=\"plain\""
        );
    }
}
