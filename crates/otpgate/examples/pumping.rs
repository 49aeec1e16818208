//! The SMS-pumping guard's judging ([`otpgate::guard::judge`]) run over a
//! simulated day, its clock driven by the simulation, with the default
//! `[guard]` settings:
//!
//! - normal traffic: about 100,000 sends a day with a daily rhythm (a tenth
//!   of the peak rate at 04:00, the peak at 16:00), from 20 accounts to 30
//!   operator prefixes of Nepal, India and Bangladesh (a few busy, many
//!   quiet); 16 accounts verify about 80% of their codes (after 5-120 s),
//!   4 never verify and get delivery receipts (about 95% delivered);
//! - returning users: a share of each account's normal sends (`--returning`,
//!   50% unless given) go to a number proven good for that account before
//!   (a code it verified, or for an account that never verifies, a delivered
//!   one), drawn uniformly from those; the rest to new random numbers. A
//!   login service's codes go mostly to users who logged in before; half is
//!   an assumption on the low side, not a measurement;
//! - a pumping attack: 5,000 sends at a fixed rate to random numbers under
//!   one prefix, starting at 10:00, almost never verified (0.5%) nor, for
//!   an account judged on receipts, delivered (3%), through the key of one
//!   of the normal accounts (so that account's normal sends to that prefix
//!   are held with it).
//!
//! Every send is decided by [`decide`], as the server decides it; where the
//! server asks the store whether a number is proven, the simulation asks
//! its own record of verified and delivered numbers per account.
//!
//! Prints one row per scenario: the share of attack sends held after the
//! first 300, and of normal sends held. Seeded: the same numbers each run.
//!
//! `cargo run -p otpgate --example pumping -- [N] [--returning SHARE]` (see
//! `bench/pumping.sh`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

use futures_util::FutureExt;
use otp_store::AccountId;
use otpgate::config::GuardConfig;
use otpgate::guard::judge::{Decision, Judge, Proof, SendKeys, decide};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
/// 2026-12-01T00:00:00Z.
const DAY_START: i64 = 1_796_083_200 * SECOND;

/// Prefixes and their share of normal traffic (busy ones first).
const PREFIXES: &[(&str, f64)] = &[
    ("+977984", 18.0),
    ("+977985", 14.0),
    ("+977986", 12.0),
    ("+977980", 10.0),
    ("+977981", 8.0),
    ("+977982", 6.0),
    ("+977974", 3.0),
    ("+977975", 2.0),
    ("+977976", 2.0),
    ("+977961", 1.5),
    ("+977962", 1.0),
    ("+977988", 1.0),
    ("+91981", 2.0),
    ("+91982", 1.5),
    ("+91983", 1.0),
    ("+91984", 1.0),
    ("+91985", 1.0),
    ("+91986", 0.8),
    ("+91987", 0.8),
    ("+91988", 0.6),
    ("+91989", 0.5),
    ("+91990", 0.5),
    ("+880171", 1.0),
    ("+880181", 0.8),
    ("+880191", 0.6),
    ("+880161", 0.5),
    ("+880151", 0.4),
    ("+880131", 0.3),
    ("+880141", 0.2),
    ("+880199", 0.1),
];

const ACCOUNTS: i64 = 20;
/// Accounts 1..=VERIFYING verify; the others are judged on receipts.
const VERIFYING: i64 = 16;
/// Normal sends per minute at the daily peak.
const PEAK_PER_MINUTE: f64 = 120.0;
/// The share of normal sends to returning users unless `--returning` says.
const RETURNING: f64 = 0.5;

#[derive(Clone, Copy)]
struct Attack {
    per_minute: f64,
    sends: usize,
    account: AccountId,
    prefix: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A normal send (index into nothing: drawn when it happens).
    Normal,
    /// The attack's n-th send.
    Attack(usize),
    Verify(AccountId, u64),
    Receipt(AccountId, u64, bool),
}

/// A random mobile number under `prefix`: ten national digits (the
/// calling codes here are 977 and 880, three digits, or 91, two).
fn number(prefix: &str, rng: &mut StdRng) -> String {
    let code_len = if prefix.starts_with("+91") { 2 } else { 3 };
    let fixed = prefix.len() - 1 - code_len;
    let mut n = prefix.to_owned();
    for _ in fixed..10 {
        n.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    n
}

fn pick_prefix(rng: &mut StdRng) -> &'static str {
    let total: f64 = PREFIXES.iter().map(|p| p.1).sum();
    let mut x = rng.random::<f64>() * total;
    for (p, w) in PREFIXES {
        if x < *w {
            return p;
        }
        x -= w;
    }
    PREFIXES[0].0
}

/// Normal sends per minute at `at`: a tenth of the peak at 04:00, the peak at 16:00.
fn rate(at: i64) -> f64 {
    let h = (at - DAY_START).rem_euclid(24 * HOUR) as f64 / HOUR as f64;
    let phase = (1.0 - (2.0 * std::f64::consts::PI * (h - 4.0) / 24.0).cos()) / 2.0;
    PEAK_PER_MINUTE * (0.1 + 0.9 * phase)
}

#[derive(Default)]
struct Outcome {
    normal: u64,
    normal_held: u64,
    attack_after_300: u64,
    attack_held_after_300: u64,
    attack_held: u64,
    /// Attack sends a hold let through: their random number happened to be
    /// one proven good for the account.
    attack_passed: u64,
    /// Normal sends a hold let through (returning users).
    normal_passed: u64,
    /// The index of the first attack send held.
    first_held: Option<usize>,
    /// Normal sends held, by the key that held them.
    held_by: std::collections::BTreeMap<String, u64>,
}

/// What the store knows of the numbers each account reached: those whose
/// code was verified, and those delivered.
#[derive(Default)]
struct Proven {
    verified: HashSet<(AccountId, String)>,
    delivered: HashSet<(AccountId, String)>,
    /// Per account (index `account - 1`), its users: the numbers proven by
    /// what it is judged on (verified, or delivered for an account that
    /// never verifies), each once.
    users: Vec<Vec<String>>,
}

impl Proven {
    /// What `GuardStore::proven_number` answers.
    fn answer(&self, account: AccountId, number: &str, proof: Proof) -> bool {
        let key = (account, number.to_owned());
        self.verified.contains(&key) || (proof == Proof::Delivered && self.delivered.contains(&key))
    }

    fn verified(&mut self, account: AccountId, number: &str) {
        if self.verified.insert((account, number.to_owned())) {
            self.users[(account - 1) as usize].push(number.to_owned());
        }
    }

    fn delivered(&mut self, account: AccountId, number: &str) {
        if self.delivered.insert((account, number.to_owned())) && account > VERIFYING {
            self.users[(account - 1) as usize].push(number.to_owned());
        }
    }
}

/// Decides a send with the server's [`decide`], the store's lookup
/// answered from `proven`; with the keys it is counted under if accepted.
fn admit(
    judge: &Mutex<Judge>,
    proven: &Proven,
    account: AccountId,
    to: &str,
    now: i64,
) -> (Decision, SendKeys) {
    let send = SendKeys::of(account, to);
    let decision = decide(judge, &send, now, |proof| {
        std::future::ready(proven.answer(account, to, proof))
    })
    .now_or_never()
    .expect("a ready answer leaves nothing to wait for");
    (decision, send)
}

/// Runs a day (a warm-up day first, so baselines exist) with `attack` on
/// the second day; `returning` of the normal sends go to returning users.
fn run(attack: Option<Attack>, seed: u64, returning: f64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let judge = Mutex::new(Judge::new(GuardConfig::default().settings()));
    let lock = || judge.lock().expect("one thread");
    let mut proven = Proven {
        users: vec![Vec::new(); ACCOUNTS as usize],
        ..Proven::default()
    };
    let mut queue: BinaryHeap<Reverse<(i64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BinaryHeap<Reverse<(i64, u64, Event)>>, at: i64, e: Event| {
        seq += 1;
        q.push(Reverse((at, seq, e)));
    };
    let start = DAY_START - 24 * HOUR;
    let end = DAY_START + 24 * HOUR;
    push(&mut queue, start, Event::Normal);
    if let Some(a) = attack {
        let begin = DAY_START + 10 * HOUR;
        for i in 0..a.sends {
            let at = begin + (i as f64 * MINUTE as f64 / a.per_minute) as i64;
            push(&mut queue, at, Event::Attack(i));
        }
    }
    let mut numbers: Vec<String> = Vec::new();
    let mut out = Outcome::default();
    let mut last_prune = start;
    while let Some(Reverse((now, _, event))) = queue.pop() {
        if now >= end {
            break;
        }
        if now - last_prune > HOUR {
            lock().prune(now);
            last_prune = now;
        }
        let counted = now >= DAY_START;
        match event {
            Event::Normal => {
                let gap = -(1.0 - rng.random::<f64>()).ln() / rate(now) * MINUTE as f64;
                push(&mut queue, now + gap as i64, Event::Normal);
                let account = rng.random_range(1..=ACCOUNTS);
                let users = &proven.users[(account - 1) as usize];
                let to = if !users.is_empty() && rng.random::<f64>() < returning {
                    users[rng.random_range(0..users.len())].clone()
                } else {
                    number(pick_prefix(&mut rng), &mut rng)
                };
                let (decision, send) = admit(&judge, &proven, account, &to, now);
                let held = matches!(decision, Decision::Held { .. });
                if counted {
                    out.normal_passed += u64::from(matches!(decision, Decision::Passed { .. }));
                    out.normal += 1;
                    out.normal_held += u64::from(held);
                    if let Decision::Held { key, .. } = decision {
                        let name =
                            format!("{} {} {:?}", key.scope.as_str(), key.value, key.account);
                        *out.held_by.entry(name).or_default() += 1;
                    }
                }
                if held {
                    continue;
                }
                lock().accepted_keys(&send, now);
                numbers.push(to);
                let n = (numbers.len() - 1) as u64;
                if account <= VERIFYING {
                    if rng.random::<f64>() < 0.8 {
                        let after = rng.random_range(5..120) * SECOND;
                        push(&mut queue, now + after, Event::Verify(account, n));
                    }
                } else {
                    let delivered = rng.random::<f64>() < 0.95;
                    let after = rng.random_range(3..30) * SECOND;
                    push(
                        &mut queue,
                        now + after,
                        Event::Receipt(account, n, delivered),
                    );
                }
            }
            Event::Attack(i) => {
                let a = attack.expect("an attack event comes with an attack");
                let to = number(a.prefix, &mut rng);
                let (decision, send) = admit(&judge, &proven, a.account, &to, now);
                let held = matches!(decision, Decision::Held { .. });
                out.attack_passed += u64::from(matches!(decision, Decision::Passed { .. }));
                if held {
                    out.attack_held += 1;
                    out.first_held.get_or_insert(i);
                }
                if i >= 300 {
                    out.attack_after_300 += 1;
                    out.attack_held_after_300 += u64::from(held);
                }
                if held {
                    continue;
                }
                lock().accepted_keys(&send, now);
                numbers.push(to);
                let n = (numbers.len() - 1) as u64;
                if a.account <= VERIFYING {
                    if rng.random::<f64>() < 0.005 {
                        push(&mut queue, now + 30 * SECOND, Event::Verify(a.account, n));
                    }
                } else {
                    let delivered = rng.random::<f64>() < 0.03;
                    let after = rng.random_range(3..30) * SECOND;
                    push(
                        &mut queue,
                        now + after,
                        Event::Receipt(a.account, n, delivered),
                    );
                }
            }
            Event::Verify(account, n) => {
                let to = &numbers[n as usize];
                lock().verified(account, to, now);
                proven.verified(account, to);
            }
            Event::Receipt(account, n, delivered) => {
                let to = &numbers[n as usize];
                lock().receipt(account, to, delivered, now);
                if delivered {
                    proven.delivered(account, to);
                }
            }
        }
    }
    out
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}%", 100.0 * part as f64 / whole as f64)
    }
}

fn main() {
    // `pumping N` runs scenario N alone and says which keys held normal
    // sends; `--returning SHARE` sets the share of sends to returning users.
    let mut only: Option<usize> = None;
    let mut returning = RETURNING;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--returning" {
            returning = args
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|v| (0.0..=1.0).contains(v))
                .expect("--returning takes a share between 0 and 1");
        } else {
            only = Some(arg.parse().expect("a scenario number"));
        }
    }
    let s = GuardConfig::default();
    println!(
        "guard defaults: window {} s in {} s buckets, baseline {} s, min_volume {}, \
         surge x{}, collapse x{}, prior {}, hold {} s, pass proven numbers {}; \
         returning users {:.0}% of normal sends",
        s.window_seconds,
        s.bucket_seconds,
        s.baseline_seconds,
        s.min_volume,
        s.surge_factor,
        s.collapse_ratio,
        s.prior_conversion,
        s.hold_seconds,
        s.pass_proven_numbers,
        returning * 100.0
    );
    println!(
        "| attack | attack rate /min | attacker judged on | first held | attack held after the first 300 | attack sends a hold let through (proven) | normal sends | normal held | normal sends a hold let through (proven) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let quiet = "+880199";
    let busy = "+977984";
    let mut scenarios: Vec<(String, Option<Attack>)> = vec![("none".into(), None)];
    for (prefix, label) in [(quiet, "quiet prefix"), (busy, "busiest prefix")] {
        for per_minute in [10.0, 30.0, 100.0, 500.0] {
            scenarios.push((
                label.into(),
                Some(Attack {
                    per_minute,
                    sends: 5000,
                    account: 3,
                    prefix,
                }),
            ));
        }
    }
    for per_minute in [30.0, 500.0] {
        scenarios.push((
            "quiet prefix".into(),
            Some(Attack {
                per_minute,
                sends: 5000,
                account: 18,
                prefix: quiet,
            }),
        ));
    }
    for (i, (label, attack)) in scenarios.into_iter().enumerate() {
        if only.is_some_and(|n| n != i) {
            continue;
        }
        let o = run(attack, 7 + i as u64, returning);
        if only.is_some() {
            for (key, n) in &o.held_by {
                println!("held by {key}: {n}");
            }
        }
        let (rate, judged) = match attack {
            None => ("-".to_owned(), "-"),
            Some(a) => (
                format!("{}", a.per_minute),
                if a.account <= VERIFYING {
                    "verifications"
                } else {
                    "receipts"
                },
            ),
        };
        println!(
            "| {label} {} | {rate} | {judged} | {} | {} | {} | {} | {} ({}) | {} |",
            attack.map_or(String::new(), |a| a.prefix.to_owned()),
            o.first_held
                .map_or("-".to_owned(), |i| format!("#{}", i + 1)),
            pct(o.attack_held_after_300, o.attack_after_300),
            attack.map_or("-".to_owned(), |_| o.attack_passed.to_string()),
            o.normal,
            pct(o.normal_held, o.normal),
            o.normal_held,
            o.normal_passed,
        );
    }
}
