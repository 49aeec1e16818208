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
//!
//! Besides the series the server counts, each scrape adds `otpgate_build_info`
//! and the `process_*` series Prometheus's client libraries export (CPU,
//! memory, descriptors, threads, start time), read from `/proc/self` then
//! ([`process_gauges`]). Every family is listed in [`FAMILIES`] and documented
//! in the README's "Metrics, logs and alerts".

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

/// A metric family: what its `# HELP` and `# TYPE` lines say.
pub struct Family {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

/// The registry's metric families. A series of a name not listed renders as
/// `untyped` without help; `tests/api/observability.rs` checks that each one
/// listed is documented in the README.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "otpgate_http_requests_total",
        kind: "counter",
        help: "HTTP requests answered, by route, method and status.",
    },
    Family {
        name: "otpgate_http_request_duration_seconds",
        kind: "histogram",
        help: "Time to answer an HTTP request, by route.",
    },
    Family {
        name: "otpgate_http_refused_total",
        kind: "counter",
        help: "Connections and requests the HTTP edge answered itself, by reason (connection_limit, client_connection_limit, request_timeout).",
    },
    Family {
        name: "otpgate_sends_total",
        kind: "counter",
        help: "Send requests by channel and outcome (accepted, invalid, insufficient_credits, rate_limited, replayed, held, idempotency_conflict, template_not_approved, error).",
    },
    Family {
        name: "otpgate_fallbacks_total",
        kind: "counter",
        help: "Channel fallback calls the scan started, and reservations it gave back because the code was verified or expired first, by outcome (started, refunded).",
    },
    Family {
        name: "otpgate_guard_held_sends_total",
        kind: "counter",
        help: "Sends the SMS-pumping guard held, by scope (country, prefix, block) and accounts (account: one account's hold, all: across accounts).",
    },
    Family {
        name: "otpgate_guard_passed_sends_total",
        kind: "counter",
        help: "Sends a pumping hold let through because their number was proven good for the account (a verified code, or for an account judged on receipts a delivered one), by scope and accounts.",
    },
    Family {
        name: "otpgate_guard_holds_total",
        kind: "counter",
        help: "Pumping holds this node placed, by scope (country, prefix, block) and accounts (account, all).",
    },
    Family {
        name: "otpgate_guard_active_holds",
        kind: "gauge",
        help: "Pumping holds standing on this node now, by scope and accounts.",
    },
    Family {
        name: "otpgate_guard_alerts_total",
        kind: "counter",
        help: "Attempts at sending pumping_hold alerts, by to (account, operator) and outcome (delivered, failed).",
    },
    Family {
        name: "otpgate_deliveries_total",
        kind: "counter",
        help: "Delivery attempts by channel, driver and outcome (sent, retry, failed).",
    },
    Family {
        name: "otpgate_delivery_jobs_started_total",
        kind: "counter",
        help: "Delivery jobs this node started, by channel and via (handed: leased as the send was written; claimed: from the outbox).",
    },
    Family {
        name: "otpgate_accept_duration_seconds",
        kind: "histogram",
        help: "Time from a valid send request to its durable commit.",
    },
    Family {
        name: "otpgate_delivery_duration_seconds",
        kind: "histogram",
        help: "Time a driver took to hand a message to its carrier.",
    },
    Family {
        name: "otpgate_smpp_total",
        kind: "counter",
        help: "SMPP events by route: bound, disconnected, bind_refused, connect_failed, submitted, throttled, rejected, submit_error, mo_message.",
    },
    Family {
        name: "otpgate_smpp_receipts_total",
        kind: "counter",
        help: "Delivery receipts applied, by route and state (unmatched: no such message id).",
    },
    Family {
        name: "otpgate_accept_to_submit_seconds",
        kind: "histogram",
        help: "Time from accepting a send to the carrier accepting its submission, by route.",
    },
    Family {
        name: "otpgate_accept_to_receipt_seconds",
        kind: "histogram",
        help: "Time from accepting a send to the carrier's delivery receipt for it, by route.",
    },
    Family {
        name: "otpgate_route_up",
        kind: "gauge",
        help: "1 when a carrier connection is bound, by route and connection.",
    },
    Family {
        name: "otpgate_route_in_flight",
        kind: "gauge",
        help: "Messages awaiting the carrier's answer (SMPP window in use), by route and connection.",
    },
    Family {
        name: "otpgate_route_delivery_rate",
        kind: "gauge",
        help: "Delivered over finished among the route's newest routing.window finished OTPs, as every node reads them from the database, by route (absent until one finished).",
    },
    Family {
        name: "otpgate_route_demoted",
        kind: "gauge",
        help: "1 when the route delivers so much worse than its peers that it only takes probes, by route.",
    },
    Family {
        name: "otpgate_webhook_attempts_total",
        kind: "counter",
        help: "Webhook delivery attempts by outcome (delivered; retry: failed, tried again later; gave_up: failed, the last one).",
    },
    Family {
        name: "otpgate_webhook_attempt_duration_seconds",
        kind: "histogram",
        help: "Time from starting a webhook POST to its answer or failure.",
    },
    Family {
        name: "otpgate_queue_depth",
        kind: "gauge",
        help: "Delivery jobs waiting, by channel.",
    },
    Family {
        name: "otpgate_verify_total",
        kind: "counter",
        help: "Verification requests by outcome (verified, wrong_code, max_attempts, expired, already_verified, not_found, rate_limited, invalid, error).",
    },
    Family {
        name: "otpgate_conversions_total",
        kind: "counter",
        help: "What this node committed of sends, by route (none before a carrier took it), channel, country (a fixed list, other otherwise) and outcome (sent, submitted, delivered, failed, verified).",
    },
    Family {
        name: "otpgate_conversion_seconds_total",
        kind: "counter",
        help: "Seconds from acceptance to delivery or to verification, summed, by route, channel, country and to (delivered, verified); divide by the outcome's otpgate_conversions_total for the mean.",
    },
    Family {
        name: "otpgate_build_info",
        kind: "gauge",
        help: "Always 1; the version and commit of the running binary as labels.",
    },
    Family {
        name: "process_cpu_seconds_total",
        kind: "counter",
        help: "User and system CPU time this process has used, in seconds.",
    },
    Family {
        name: "process_resident_memory_bytes",
        kind: "gauge",
        help: "Resident memory of this process, in bytes.",
    },
    Family {
        name: "process_virtual_memory_bytes",
        kind: "gauge",
        help: "Virtual memory of this process, in bytes.",
    },
    Family {
        name: "process_open_fds",
        kind: "gauge",
        help: "File descriptors this process has open.",
    },
    Family {
        name: "process_max_fds",
        kind: "gauge",
        help: "The most file descriptors this process may open (its soft limit).",
    },
    Family {
        name: "process_start_time_seconds",
        kind: "gauge",
        help: "When this process started, in seconds since the Unix epoch.",
    },
    Family {
        name: "process_threads",
        kind: "gauge",
        help: "Threads of this process.",
    },
];

/// The registry, one per application.
#[derive(Default)]
pub struct Metrics {
    // std Mutex: held for a map update only, never across an await.
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, String), Histogram>>,
}

fn family(name: &str) -> (&'static str, &'static str) {
    FAMILIES
        .iter()
        .find(|f| f.name == name)
        .map_or(("", "untyped"), |f| (f.help, f.kind))
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

/// `otpgate_build_info`: 1, with the package version and the commit as labels;
/// the commit is `OTPGATE_BUILD_COMMIT` at build time, `unknown` when unset.
pub fn build_info() -> (&'static str, String, f64) {
    let commit = option_env!("OTPGATE_BUILD_COMMIT")
        .filter(|c| !c.is_empty())
        .unwrap_or("unknown");
    let version = env!("CARGO_PKG_VERSION");
    (
        "otpgate_build_info",
        labels(&[("version", version), ("commit", commit)]),
        1.0,
    )
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`): the
/// kernel shows user space 100 whatever its own tick rate, on every
/// architecture a server runs on.
const USER_HZ: f64 = 100.0;

/// The `process_*` series, read from `/proc/self` at scrape time: CPU time,
/// virtual memory, threads and start time from `stat`, resident memory from
/// `status`, open descriptors by listing `fd` (the listing's own descriptor
/// included), and the soft limit on them. Each is missing, never made up, where
/// its file cannot be read (a system without `/proc`).
pub fn process_gauges() -> Vec<(&'static str, String, f64)> {
    let mut out = Vec::new();
    let mut push = |name, value: f64| out.push((name, String::new(), value));
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    if let Some(stat) = stat.as_deref().and_then(ProcStat::parse) {
        push("process_cpu_seconds_total", stat.cpu_ticks as f64 / USER_HZ);
        push("process_virtual_memory_bytes", stat.virtual_bytes as f64);
        push("process_threads", stat.threads as f64);
        let boot = std::fs::read_to_string("/proc/stat").ok();
        if let Some(boot) = boot.as_deref().and_then(boot_time) {
            push(
                "process_start_time_seconds",
                boot as f64 + stat.start_ticks as f64 / USER_HZ,
            );
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").ok();
    if let Some(rss) = status.as_deref().and_then(resident_bytes) {
        push("process_resident_memory_bytes", rss as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        push("process_open_fds", fds.count() as f64);
    }
    if let Some(limit) = crate::process::open_file_limit() {
        push("process_max_fds", limit as f64);
    }
    out
}

/// What the metrics take from `/proc/self/stat`.
#[derive(Debug, PartialEq)]
struct ProcStat {
    /// User plus system time, in clock ticks.
    cpu_ticks: u64,
    threads: u64,
    /// Clock ticks from boot to the process's start.
    start_ticks: u64,
    virtual_bytes: u64,
}

impl ProcStat {
    fn parse(text: &str) -> Option<ProcStat> {
        // Field 2, the command name, is in parentheses and may itself hold
        // spaces and `)`: fields are counted from the last `)`.
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `fields[0]` is field 3 (the state), as proc(5) numbers them.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(ProcStat {
            cpu_ticks: field(14)? + field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
        })
    }
}

/// The boot time, seconds since the epoch, from `/proc/stat`'s `btime` line.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of a `/proc/<pid>/status`, in bytes (the file gives kB).
fn resident_bytes(status: &str) -> Option<u64> {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    kb.checked_mul(1024)
}

impl Metrics {
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        let key = (name, labels(pairs));
        *self
            .counters
            .lock()
            .expect("metrics poisoned")
            .entry(key)
            .or_default() += n;
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

    /// The sum of the counters of family `name` whose labels begin with
    /// `first` and include `with` (each as [`labels`] renders it): what the
    /// console's routes page reads, e.g. a route's `event="submitted"`.
    pub fn counter_sum(&self, name: &str, first: &[(&str, &str)], with: &[(&str, &str)]) -> u64 {
        let first = labels(first);
        let with: Vec<String> = with.iter().map(|p| labels(&[*p])).collect();
        self.counters
            .lock()
            .expect("metrics poisoned")
            .iter()
            .filter(|((n, l), _)| {
                *n == name
                    && l.strip_prefix(first.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(','))
                    && with.iter().all(|w| l.split(',').any(|part| part == w))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// The exposition text; `gauges` are values computed at scrape time.
    pub fn render(&self, gauges: &[(&'static str, String, f64)]) -> String {
        let mut out = String::new();
        let mut last = "";
        let mut header = |out: &mut String, name: &'static str| {
            if name != last {
                let (help, kind) = family(name);
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
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
    fn a_counter_sum_takes_the_series_of_one_route_with_the_labels_asked_for() {
        let m = Metrics::default();
        let count = |route: &str, event: &str, n: usize| {
            for _ in 0..n {
                m.inc("otpgate_smpp_total", &[("route", route), ("event", event)]);
            }
        };
        count("a", "submitted", 3);
        count("a", "bound", 1);
        count("ab", "submitted", 5);
        let sum = |route: &str, with: &[(&str, &str)]| {
            m.counter_sum("otpgate_smpp_total", &[("route", route)], with)
        };
        assert_eq!(
            sum("a", &[("event", "submitted")]),
            3,
            "route ab is not route a"
        );
        assert_eq!(sum("a", &[]), 4);
        assert_eq!(sum("ab", &[("event", "submitted")]), 5);
        assert_eq!(sum("c", &[]), 0);
    }

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
    fn proc_stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a `)` of its own, as a thread may set.
        let line = "4242 (otp gate) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 1048576000 5000 18446744073709551615";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                cpu_ticks: 300,
                threads: 9,
                start_ticks: 123456,
                virtual_bytes: 1048576000,
            })
        );
        assert_eq!(ProcStat::parse("4242 (cut short) S 1 2"), None);
        assert_eq!(ProcStat::parse("no parentheses"), None);
    }

    #[test]
    fn boot_time_and_resident_memory_are_read_from_their_lines() {
        let stat = "cpu  1 2 3 4\nintr 5\nbtime 1764700000\nprocesses 77\n";
        assert_eq!(boot_time(stat), Some(1764700000));
        assert_eq!(boot_time("cpu 1\n"), None);
        let status = "Name:\totpgate\nVmSize:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(12345 * 1024));
        assert_eq!(resident_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_reports_its_own_numbers() {
        let gauges = process_gauges();
        let value = |name: &str| {
            gauges
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, _, v)| *v)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0);
        assert!(
            value("process_open_fds") >= 3.0,
            "stdin, stdout, stderr at least"
        );
        assert!(value("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
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
