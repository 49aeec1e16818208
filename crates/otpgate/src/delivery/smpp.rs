//! The SMPP driver: text OTPs to an operator's SMSC over SMPP 3.4.
//!
//! A route holds `binds` transceiver connections, or with `bind_mode =
//! "transmitter_receiver"` `binds` transmitters (which submit) and as many
//! receivers (which take the receipts), plain or over TLS (`smpp::tls`: a CA
//! file, the public roots or a pinned certificate). Each has a supervisor task
//! that connects and binds, reconnects with exponential backoff when the
//! connection drops, and keeps the bind's state for `/readyz` and `/metrics`; a
//! refused bind (wrong password) is logged once per state change with the SMSC's
//! status, never with the password, and retried slowly instead of crash-looping.
//! While no bind is up, deliveries answer `Retry` and the messages wait in the
//! durable outbox.
//!
//! The submit_sm fields an operator tunes (validity_period, source and
//! destination TON/NPI and form, service_type, priority_flag, the data_coding of
//! GSM text) are checked once at start-up into `SubmitSettings`; by default the
//! validity is the code's remaining life, and a code that expired before it
//! could be submitted fails (refunded) instead of going out stale.
//!
//! A delivery splits the rendered text with `otp_domain::segments::split` (the same
//! code that counted the segments charged, so parts sent = segments charged),
//! GSM 03.38 unpacked (data_coding 0) when every character fits and UCS-2
//! (data_coding 8) otherwise, ties long messages together as configured (UDH by
//! default) and submits each part through the bind's window. ESME_RTHROTTLED and
//! ESME_RMSGQFUL slow down and resubmit; an invalid destination or message is a
//! permanent failure (refunded); anything else is retried later.
//!
//! Receipts from every bind go to one task that applies them in batches. Each
//! receipt's id is looked up through the id forms the store keeps per part, and
//! `smpp::receipt::ids::decide` picks its part under the route's `receipt_ids`
//! habit (`auto` learns it from the first unambiguous matches). A receipt that
//! matches nothing yet (it may have overtaken the record of its own submission)
//! or more than one part is held and tried again for `receipt_hold_seconds`
//! (two minutes); then it is counted as `unmatched` and kept, with its raw id and
//! text, in the store's bounded table of unmatched receipts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use otp_domain::PhoneNumber;
use otp_domain::segments::{self, SmsEncoding};
use otp_domain::sender::SenderId;
use otp_store::{
    ClaimedJob, OtpStatus, Receipt, SharedStore, StoreError, UnmatchedReceipt, now_micros,
};
use smpp::concat::{Concatenation, build_submits};
use smpp::pdu::{self, CommandStatus, SubmitSm, data_coding, registered_delivery, relative_time};
use smpp::receipt::MessageState;
use smpp::receipt::ids::{Decision, HabitLearner, IdFormat, IdLookup, decide};
use smpp::tls::{TlsConfig, parse_sha256_pin};
use smpp::{Backoff, BindConfig, BindMode, Client, Inbound};

use super::{DeliveryOutcome, Driver, RouteHealth};
use crate::metrics::Metrics;
use otp_domain::secret::Secret;

/// One SMPP route's settings (`[routes.smpp]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmppConfig {
    pub host: String,
    pub port: u16,
    pub system_id: String,
    pub password: Secret<String>,
    pub system_type: String,
    /// Connections (transceiver binds) to open.
    pub binds: usize,
    /// Outstanding submit_sm per bind.
    pub window: usize,
    /// Most submit_sm per second per bind; 0 = no limit.
    pub tps: u32,
    /// Sender: digits or an alphanumeric id.
    pub source_addr: String,
    /// `udh` (8-bit reference), `udh16`, `sar` or `payload` (one message_payload).
    pub concatenation: String,
    /// Ask for delivery receipts.
    pub registered_delivery: bool,
    pub response_timeout_ms: u64,
    pub enquire_link_seconds: u64,
    /// Longest wait between reconnection attempts.
    pub reconnect_max_seconds: u64,
    /// Resubmissions of one part after throttling answers before giving up for now.
    pub throttle_retries: u32,
    /// How the SMSC's receipts spell the id its submit_sm_resp gave: `auto`
    /// (learn it from the first unambiguous matches), `text` (the same text up
    /// to case, zero padding and `0x`), `decimal` (submit_sm_resp in hex, the
    /// receipt in decimal) or `hex` (submit_sm_resp in decimal, the receipt in
    /// hex). Default `auto`.
    pub receipt_ids: String,
    /// How long a receipt that matches no message (or several) is held and
    /// retried before it counts as unmatched. Default 120.
    pub receipt_hold_seconds: u64,
    /// `transceiver`: each bind is one connection both ways. `transmitter_receiver`:
    /// each bind is a transmitter for submits plus a receiver for receipts.
    pub bind_mode: String,
    /// How long the SMSC may keep trying: `"remaining"` (the code's remaining
    /// life, so an SMS that cannot arrive in time is dropped rather than
    /// arriving stale), `"smsc_default"` (no validity_period sent) or seconds.
    pub validity_period: ValidityPeriod,
    /// source_addr_ton; unset: 5 for an alphanumeric sender, 3 for a short
    /// code (up to 8 digits), 1 for a longer number.
    pub source_ton: Option<u8>,
    /// source_addr_npi; unset: 0 for alphanumeric senders and short codes, 1 for numbers.
    pub source_npi: Option<u8>,
    /// `international` (`9779851023212`, the default) or `national` (`9851023212`).
    pub destination_format: String,
    /// dest_addr_ton; unset: 1 for international form, 2 for national.
    pub destination_ton: Option<u8>,
    /// dest_addr_npi; unset: 1 (ISDN).
    pub destination_npi: Option<u8>,
    /// service_type, at most 5 characters; empty: the SMSC's default.
    pub service_type: String,
    /// priority_flag, 0 (lowest, the default) to 3.
    pub priority_flag: u8,
    /// data_coding for GSM 03.38 text: 0 (SMSC default alphabet) or 1, as some
    /// SMSCs want. UCS-2 text is always 8.
    pub gsm_data_coding: u8,
    /// Log every PDU of this route at debug level (target `smpp::pdu`), without
    /// the password or the message text.
    pub pdu_trace: bool,
    /// Connect over TLS.
    pub tls: bool,
    /// PEM file of the CA(s) that signed the SMSC's certificate; empty: the
    /// Mozilla root CAs.
    pub tls_ca_file: String,
    /// SHA-256 of the SMSC's certificate (DER), hex with or without `:`; when
    /// set, exactly that certificate is trusted, whoever signed it.
    pub tls_cert_sha256: String,
    /// The name the SMSC's certificate must carry; empty: `host`.
    pub tls_server_name: String,
}

/// `validity_period` as written in the file: a name or a number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ValidityPeriod {
    /// `"remaining"` or `"smsc_default"`.
    Named(String),
    /// A fixed validity in seconds.
    Seconds(u64),
}

impl Default for SmppConfig {
    fn default() -> Self {
        SmppConfig {
            host: "127.0.0.1".into(),
            port: 2775,
            system_id: String::new(),
            password: Secret::new(String::new()),
            system_type: String::new(),
            binds: 1,
            window: 10,
            tps: 0,
            source_addr: "otpgate".into(),
            concatenation: "udh".into(),
            registered_delivery: true,
            response_timeout_ms: 10_000,
            enquire_link_seconds: 30,
            reconnect_max_seconds: 5,
            throttle_retries: 8,
            receipt_ids: "auto".into(),
            receipt_hold_seconds: 120,
            bind_mode: "transceiver".into(),
            validity_period: ValidityPeriod::Named("remaining".into()),
            source_ton: None,
            source_npi: None,
            destination_format: "international".into(),
            destination_ton: None,
            destination_npi: None,
            service_type: String::new(),
            priority_flag: 0,
            gsm_data_coding: 0,
            pdu_trace: false,
            tls: false,
            tls_ca_file: String::new(),
            tls_cert_sha256: String::new(),
            tls_server_name: String::new(),
        }
    }
}

/// The longest fixed `validity_period`: 30 days.
const MAX_VALIDITY_SECONDS: u64 = 30 * 86_400;

/// How long the SMSC may keep a message, decided per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    /// Until the code expires.
    Remaining,
    /// Whatever the SMSC does by default (no validity_period sent).
    SmscDefault,
    Fixed(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DestinationForm {
    International,
    National,
}

/// The route's submit_sm settings, checked once at start-up.
#[derive(Debug, Clone)]
struct SubmitSettings {
    source_ton: u8,
    source_npi: u8,
    source_addr: String,
    destination: DestinationForm,
    destination_ton: u8,
    destination_npi: u8,
    service_type: String,
    priority_flag: u8,
    gsm_data_coding: u8,
    validity: Validity,
    registered_delivery: u8,
}

impl SubmitSettings {
    /// The submit_sm fields of a message to `e164` whose code expires at
    /// `expires_at`, built at `now` (both in microseconds); fails when the code
    /// has (all but) expired and the validity follows it.
    fn template(
        &self,
        e164: &str,
        ucs2: bool,
        expires_at: i64,
        now: i64,
    ) -> Result<SubmitSm, String> {
        let validity_period = match self.validity {
            Validity::Remaining => {
                let left = expires_at - now;
                if left < 1_000_000 {
                    return Err("the code expired before it reached the SMSC".into());
                }
                // Whole seconds, rounded down: the SMSC never outlives the code.
                relative_time(Duration::from_secs(left as u64 / 1_000_000))
            }
            Validity::SmscDefault => String::new(),
            Validity::Fixed(d) => relative_time(d),
        };
        let destination_addr = match self.destination {
            DestinationForm::International => e164.trim_start_matches('+').to_owned(),
            DestinationForm::National => national_number(e164)?,
        };
        Ok(SubmitSm {
            service_type: self.service_type.clone(),
            source_addr_ton: self.source_ton,
            source_addr_npi: self.source_npi,
            source_addr: self.source_addr.clone(),
            dest_addr_ton: self.destination_ton,
            dest_addr_npi: self.destination_npi,
            destination_addr,
            priority_flag: self.priority_flag,
            validity_period,
            registered_delivery: self.registered_delivery,
            data_coding: if ucs2 {
                data_coding::UCS2
            } else {
                self.gsm_data_coding
            },
            ..SubmitSm::default()
        })
    }
}

/// TON values of SMPP 3.4 section 5.2.5.
fn valid_ton(ton: u8) -> bool {
    ton <= 6
}

/// NPI values of SMPP 3.4 section 5.2.6.
fn valid_npi(npi: u8) -> bool {
    matches!(npi, 0 | 1 | 3 | 4 | 6 | 8 | 9 | 10 | 14 | 18)
}

/// The bind modes a route opens, per bind.
fn bind_modes(bind_mode: &str) -> anyhow::Result<&'static [BindMode]> {
    Ok(match bind_mode {
        "transceiver" => &[BindMode::Transceiver],
        "transmitter_receiver" => &[BindMode::Transmitter, BindMode::Receiver],
        other => anyhow::bail!(
            "smpp.bind_mode must be \"transceiver\" or \"transmitter_receiver\", not {other:?}"
        ),
    })
}

impl SmppConfig {
    fn receipt_ids(&self) -> anyhow::Result<IdFormat> {
        IdFormat::parse(&self.receipt_ids).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown receipt_ids {:?} (auto, text, hex, decimal)",
                self.receipt_ids
            )
        })
    }

    fn concatenation(&self, reference: u16) -> anyhow::Result<Concatenation> {
        Ok(match self.concatenation.as_str() {
            "udh" => Concatenation::Udh8 {
                reference: reference as u8,
            },
            "udh16" => Concatenation::Udh16 { reference },
            "sar" => Concatenation::Sar { reference },
            "payload" => Concatenation::MessagePayload,
            other => anyhow::bail!("unknown concatenation {other:?} (udh, udh16, sar, payload)"),
        })
    }

    fn bind_config(&self, mode: BindMode, trace_label: String) -> BindConfig {
        let mut b = BindConfig::new(self.system_id.clone(), self.password.expose().clone());
        b.system_type = self.system_type.clone();
        b.mode = mode;
        b.pdu_trace = self.pdu_trace.then_some(trace_label);
        b.window = self.window.max(1);
        b.tps = (self.tps > 0).then_some(self.tps);
        b.response_timeout = Duration::from_millis(self.response_timeout_ms.max(1));
        b.enquire_link_interval = Duration::from_secs(self.enquire_link_seconds.max(1));
        b
    }

    fn validity(&self) -> anyhow::Result<Validity> {
        Ok(match &self.validity_period {
            ValidityPeriod::Named(name) if name == "remaining" => Validity::Remaining,
            ValidityPeriod::Named(name) if name == "smsc_default" => Validity::SmscDefault,
            ValidityPeriod::Seconds(s) if (1..=MAX_VALIDITY_SECONDS).contains(s) => {
                Validity::Fixed(Duration::from_secs(*s))
            }
            other => anyhow::bail!(
                "smpp.validity_period must be \"remaining\", \"smsc_default\" or a number of \
                 seconds from 1 to {MAX_VALIDITY_SECONDS}, not {other:?}"
            ),
        })
    }

    /// Checks every submit_sm setting and decides the automatic ones.
    fn submit_settings(&self) -> anyhow::Result<SubmitSettings> {
        // SubmitSm::new decides the automatic source TON/NPI (and strips a `+`).
        let auto = SubmitSm::new(&self.source_addr, "", 0, Bytes::new());
        let source_ton = self.source_ton.unwrap_or(auto.source_addr_ton);
        let source_npi = self.source_npi.unwrap_or(auto.source_addr_npi);
        anyhow::ensure!(
            valid_ton(source_ton),
            "smpp.source_ton must be a TON of SMPP 3.4 (0 to 6), not {source_ton}"
        );
        anyhow::ensure!(
            valid_npi(source_npi),
            "smpp.source_npi must be an NPI of SMPP 3.4 (0, 1, 3, 4, 6, 8, 9, 10, 14 or 18), not {source_npi}"
        );
        let sender = auto.source_addr;
        anyhow::ensure!(
            !sender.is_empty()
                && sender.len() <= 20
                && sender.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
            "smpp.source_addr must have 1 to 20 printable ASCII characters"
        );
        anyhow::ensure!(
            source_ton != pdu::ton::ALPHANUMERIC || sender.chars().count() <= 11,
            "smpp.source_addr: an alphanumeric sender may have at most 11 characters (GSM 03.40), {sender:?} has {}",
            sender.chars().count()
        );
        let destination = match self.destination_format.as_str() {
            "international" => DestinationForm::International,
            "national" => DestinationForm::National,
            other => anyhow::bail!(
                "smpp.destination_format must be \"international\" or \"national\", not {other:?}"
            ),
        };
        let destination_ton = self.destination_ton.unwrap_or(match destination {
            DestinationForm::International => pdu::ton::INTERNATIONAL,
            DestinationForm::National => pdu::ton::NATIONAL,
        });
        let destination_npi = self.destination_npi.unwrap_or(pdu::npi::ISDN);
        anyhow::ensure!(
            valid_ton(destination_ton),
            "smpp.destination_ton must be a TON of SMPP 3.4 (0 to 6), not {destination_ton}"
        );
        anyhow::ensure!(
            valid_npi(destination_npi),
            "smpp.destination_npi must be an NPI of SMPP 3.4 (0, 1, 3, 4, 6, 8, 9, 10, 14 or 18), not {destination_npi}"
        );
        anyhow::ensure!(
            self.service_type.len() <= 5
                && self.service_type.bytes().all(|b| b.is_ascii_alphanumeric()),
            "smpp.service_type may have at most 5 ASCII letters or digits (SMPP 3.4), not {:?}",
            self.service_type
        );
        anyhow::ensure!(
            self.priority_flag <= 3,
            "smpp.priority_flag must be 0 to 3, not {}",
            self.priority_flag
        );
        anyhow::ensure!(
            matches!(self.gsm_data_coding, 0 | 1),
            "smpp.gsm_data_coding must be 0 or 1, not {}",
            self.gsm_data_coding
        );
        Ok(SubmitSettings {
            source_ton,
            source_npi,
            source_addr: sender,
            destination,
            destination_ton,
            destination_npi,
            service_type: self.service_type.clone(),
            priority_flag: self.priority_flag,
            gsm_data_coding: self.gsm_data_coding,
            validity: self.validity()?,
            registered_delivery: if self.registered_delivery {
                registered_delivery::ALWAYS
            } else {
                registered_delivery::NONE
            },
        })
    }

    /// The TLS settings, when `tls` is on.
    fn tls_config(&self) -> anyhow::Result<Option<TlsConfig>> {
        if !self.tls {
            anyhow::ensure!(
                self.tls_ca_file.is_empty()
                    && self.tls_cert_sha256.is_empty()
                    && self.tls_server_name.is_empty(),
                "smpp.tls_ca_file, tls_cert_sha256 and tls_server_name need smpp.tls = true"
            );
            return Ok(None);
        }
        anyhow::ensure!(
            self.tls_ca_file.is_empty() || self.tls_cert_sha256.is_empty(),
            "set smpp.tls_ca_file or smpp.tls_cert_sha256, not both: a pinned certificate is trusted whoever signed it"
        );
        let name = if self.tls_server_name.is_empty() {
            self.host.as_str()
        } else {
            self.tls_server_name.as_str()
        };
        let tls = if !self.tls_cert_sha256.is_empty() {
            let pin = parse_sha256_pin(&self.tls_cert_sha256)
                .map_err(|e| anyhow::anyhow!("smpp.tls_cert_sha256: {e}"))?;
            TlsConfig::pinned(name, pin)
        } else if !self.tls_ca_file.is_empty() {
            TlsConfig::ca_file(name, std::path::Path::new(&self.tls_ca_file))
        } else {
            TlsConfig::public_roots(name)
        };
        Ok(Some(tls.map_err(|e| anyhow::anyhow!("smpp TLS: {e}"))?))
    }
}

/// What a bind is doing, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BindState {
    Connecting,
    Bound,
    /// The SMSC refused the bind; the status names why.
    BindRefused(String),
    /// The connection could not be made or was lost.
    Down(String),
}

/// When each message still awaiting its receipt was accepted, by message id, for
/// the accept -> receipt latency. Bounded: the oldest entries go first.
#[derive(Default)]
struct Submitted {
    accepted_at: HashMap<String, i64>,
    order: VecDeque<String>,
}

impl Submitted {
    const MAX: usize = 200_000;

    fn insert(&mut self, id: String, accepted_at: i64) {
        if self.accepted_at.insert(id.clone(), accepted_at).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::MAX {
            if let Some(old) = self.order.pop_front() {
                self.accepted_at.remove(&old);
            }
        }
    }

    /// Takes the entry for any spelling of the id.
    fn take(&mut self, spellings: &[String]) -> Option<i64> {
        spellings.iter().find_map(|s| self.accepted_at.remove(s))
    }
}

struct BindSlot {
    mode: BindMode,
    /// `system_id#i`, or `system_id#rxi` for a receiver: in `/readyz`, metrics and the trace.
    label: String,
    // std Mutex: read or swapped, never held across an await.
    client: Mutex<Option<Client>>,
    state: Mutex<BindState>,
}

/// A route to one SMSC.
pub struct SmppDriver {
    route: String,
    config: SmppConfig,
    settings: SubmitSettings,
    tls: Option<TlsConfig>,
    binds: Vec<Arc<BindSlot>>,
    /// Binds that submit (not receivers).
    submitters: usize,
    next_bind: AtomicUsize,
    reference: AtomicU16,
    metrics: Arc<Metrics>,
    /// Cancelled by `shutdown`; each bind task holds it from its start.
    stop: CancellationToken,
    // std Mutex: a map insert or removal, never held across an await.
    submitted: Arc<Mutex<Submitted>>,
}

impl SmppConfig {
    /// Checks every setting of route `route` without connecting: what
    /// [`SmppDriver::start`] refuses, `otpgate check-config` reports.
    pub fn check(&self, route: &str) -> anyhow::Result<()> {
        let in_route = |e: anyhow::Error| anyhow::anyhow!("route {route}: {e}");
        self.concatenation(0).map_err(in_route)?;
        self.receipt_ids()
            .map_err(|e| anyhow::anyhow!("route {route}: {e}"))?;
        // SMPP 3.4 5.2.1-5.2.3: C-octet strings of at most 16, 9 and 13 octets.
        anyhow::ensure!(
            !self.system_id.is_empty() && self.system_id.len() <= 15,
            "route {route}: smpp.system_id must have 1 to 15 characters"
        );
        anyhow::ensure!(
            self.password.expose().len() <= 8,
            "route {route}: smpp.password may have at most 8 characters (SMPP 3.4)"
        );
        anyhow::ensure!(
            self.system_type.len() <= 12,
            "route {route}: smpp.system_type may have at most 12 characters"
        );
        bind_modes(&self.bind_mode).map_err(in_route)?;
        self.submit_settings().map_err(in_route)?;
        self.tls_config().map_err(in_route)?;
        Ok(())
    }

    /// Connects to the SMSC, binds once as the route's first bind would and
    /// unbinds (`otpgate doctor`). Returns the SMSC's system id.
    pub async fn probe(&self, route: &str) -> anyhow::Result<String> {
        self.check(route)?;
        let mode = bind_modes(&self.bind_mode)?[0];
        let bind_config = self.bind_config(mode, format!("{route}/doctor"));
        let address = (self.host.as_str(), self.port);
        let (client, _inbound) = match self.tls_config()? {
            Some(tls) => Client::connect_tls(address, &tls, bind_config).await,
            None => Client::connect(address, bind_config).await,
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let smsc = client.smsc_system_id().to_owned();
        let _ = client.unbind().await;
        Ok(smsc)
    }
}

impl SmppDriver {
    /// Starts the route's binds and its receipt task.
    pub fn start(
        route: &str,
        config: SmppConfig,
        store: SharedStore,
        metrics: Arc<Metrics>,
        guard: Arc<dyn super::FinalReceipts>,
    ) -> anyhow::Result<Arc<SmppDriver>> {
        config.check(route)?;
        let receipt_ids = config
            .receipt_ids()
            .map_err(|e| anyhow::anyhow!("route {route}: {e}"))?;
        let in_route = |e: anyhow::Error| anyhow::anyhow!("route {route}: {e}");
        let modes = bind_modes(&config.bind_mode).map_err(in_route)?;
        let settings = config.submit_settings().map_err(in_route)?;
        let tls = config.tls_config().map_err(in_route)?;
        let mut binds = Vec::new();
        for i in 0..config.binds.max(1) {
            for &mode in modes {
                let label = match mode {
                    BindMode::Receiver => format!("{}#rx{i}", config.system_id),
                    _ => format!("{}#{i}", config.system_id),
                };
                binds.push(Arc::new(BindSlot {
                    mode,
                    label,
                    client: Mutex::new(None),
                    state: Mutex::new(BindState::Connecting),
                }));
            }
        }
        let submitters = binds
            .iter()
            .filter(|b| b.mode != BindMode::Receiver)
            .count();
        let driver = Arc::new(SmppDriver {
            route: route.to_owned(),
            config,
            settings,
            tls,
            binds,
            submitters,
            next_bind: AtomicUsize::new(0),
            reference: AtomicU16::new(rand::random()),
            metrics,
            stop: CancellationToken::new(),
            submitted: Arc::new(Mutex::new(Submitted::default())),
        });
        let (receipts_tx, receipts_rx) = mpsc::channel(8192);
        for slot in &driver.binds {
            tokio::spawn(supervise(driver.clone(), slot.clone(), receipts_tx.clone()));
        }
        tokio::spawn(apply_receipts(
            ReceiptTask {
                route: driver.route.clone(),
                store,
                metrics: driver.metrics.clone(),
                guard,
                submitted: driver.submitted.clone(),
                learner: HabitLearner::new(receipt_ids),
                hold: Duration::from_secs(driver.config.receipt_hold_seconds),
            },
            receipts_rx,
        ));
        Ok(driver)
    }

    fn pick(&self) -> Option<Client> {
        let n = self.binds.len();
        let start = self.next_bind.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| {
            let slot = &self.binds[(start + i) % n];
            if slot.mode == BindMode::Receiver {
                return None;
            }
            let guard = slot.client.lock().expect("bind slot poisoned");
            guard.as_ref().filter(|c| !c.is_closed()).cloned()
        })
    }

    fn count(&self, what: &str) {
        self.metrics.inc(
            "otpgate_smpp_total",
            &[("route", &self.route), ("event", what)],
        );
    }

    /// The submit_sm PDUs for one message.
    fn submits(
        &self,
        job: &ClaimedJob,
        sender: Option<&SenderId>,
    ) -> Result<Vec<SubmitSm>, String> {
        let parts = segments::split(&job.otp.message());
        let ucs2 = parts.first().map(|p| p.encoding) == Some(SmsEncoding::Ucs2);
        let mut template = self.settings.template(
            job.otp.number.as_str(),
            ucs2,
            job.otp.expires_at,
            now_micros(),
        )?;
        if let Some(sender) = sender {
            send_as(&mut template, sender);
        }
        let bytes: Vec<Bytes> = parts.into_iter().map(|p| Bytes::from(p.bytes)).collect();
        let reference = self.reference.fetch_add(1, Ordering::Relaxed);
        let method = self
            .config
            .concatenation(reference)
            .map_err(|e| e.to_string())?;
        build_submits(&template, &bytes, method).map_err(|e| e.to_string())
    }
}

/// Puts an account's own sender in a submit_sm, with the TON and NPI its
/// form calls for (alphanumeric: 5/0; up to 8 digits, a short code: 3/0;
/// longer, a number: 1/1); the route's configured `source_ton` and
/// `source_npi` describe the route's own sender, not this one.
fn send_as(sm: &mut SubmitSm, sender: &SenderId) {
    let auto = SubmitSm::new(sender.as_str(), "", 0, Bytes::new());
    sm.source_addr = auto.source_addr;
    sm.source_addr_ton = auto.source_addr_ton;
    sm.source_addr_npi = auto.source_addr_npi;
}

/// The national significant number of an E.164 number: `+9779851023212` ->
/// `9851023212` (no trunk prefix).
fn national_number(e164: &str) -> Result<String, String> {
    let number = PhoneNumber::parse(e164).map_err(|e| format!("cannot read the number: {e}"))?;
    let country_code = number.country_code().to_string();
    let digits = e164.trim_start_matches('+');
    digits
        .strip_prefix(country_code.as_str())
        .map(str::to_owned)
        .ok_or_else(|| "cannot read the number's country code".into())
}

/// Statuses after which resubmitting the same message cannot succeed.
fn is_permanent(status: CommandStatus) -> bool {
    matches!(
        status,
        CommandStatus::EsmeRinvdstadr
            | CommandStatus::EsmeRinvdstton
            | CommandStatus::EsmeRinvdstnpi
            | CommandStatus::EsmeRinvmsglen
            | CommandStatus::EsmeRinvesmclass
            | CommandStatus::EsmeRinvnumdests
    )
}

#[async_trait::async_trait]
impl Driver for SmppDriver {
    fn name(&self) -> &'static str {
        "smpp"
    }

    fn capacity(&self) -> usize {
        self.submitters * self.config.window.max(1)
    }

    fn is_ready(&self) -> bool {
        self.pick().is_some()
    }

    fn health(&self) -> Vec<RouteHealth> {
        self.binds
            .iter()
            .map(|slot| {
                let state = slot.state.lock().expect("bind slot poisoned").clone();
                let (status, detail) = match state {
                    BindState::Connecting => ("connecting", None),
                    BindState::Bound => ("bound", None),
                    BindState::BindRefused(s) => ("bind_refused", Some(s)),
                    BindState::Down(s) => ("down", Some(s)),
                };
                let window = slot
                    .client
                    .lock()
                    .expect("bind slot poisoned")
                    .as_ref()
                    .map(|c| c.window_in_use())
                    .unwrap_or(0);
                RouteHealth {
                    route: self.route.clone(),
                    connection: slot.label.clone(),
                    status: status.to_owned(),
                    detail,
                    in_flight: window,
                    state: "active",
                }
            })
            .collect()
    }

    fn takes_sender(&self) -> bool {
        true
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        self.deliver_as(job, None).await
    }

    async fn deliver_as(&self, job: &ClaimedJob, sender: Option<&SenderId>) -> DeliveryOutcome {
        let routed = |outcome| DeliveryOutcome::Routed {
            route: self.route.clone(),
            outcome: Box::new(outcome),
        };
        let submits = match self.submits(job, sender) {
            Ok(s) => s,
            Err(error) => return routed(DeliveryOutcome::Failed { error }),
        };
        let mut ids = Vec::with_capacity(submits.len());
        for sm in &submits {
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
            let mut throttled = 0;
            loop {
                let Some(client) = self.pick() else {
                    return routed(DeliveryOutcome::Retry {
                        error: format!("no SMPP bind is up on route {}", self.route),
                    });
                };
                match client.submit(sm).await {
                    Ok(resp) if resp.is_ok() => {
                        self.count("submitted");
                        self.metrics.observe(
                            "otpgate_accept_to_submit_seconds",
                            &[("route", &self.route)],
                            (now_micros() - job.otp.created_at).max(0) as f64 / 1e6,
                        );
                        self.submitted
                            .lock()
                            .expect("submitted index poisoned")
                            .insert(resp.message_id.clone(), job.otp.created_at);
                        ids.push(resp.message_id);
                        break;
                    }
                    Ok(resp) if resp.is_throttled() => {
                        self.count("throttled");
                        throttled += 1;
                        if throttled > self.config.throttle_retries {
                            return routed(DeliveryOutcome::Retry {
                                error: format!("SMSC kept answering {:?}", resp.status),
                            });
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    Ok(resp) if is_permanent(resp.status) => {
                        self.count("rejected");
                        return routed(DeliveryOutcome::Failed {
                            error: format!("SMSC rejected the message: {:?}", resp.status),
                        });
                    }
                    Ok(resp) => {
                        self.count("submit_error");
                        return routed(DeliveryOutcome::Retry {
                            error: format!("SMSC answered {:?}", resp.status),
                        });
                    }
                    Err(e) => {
                        self.count("submit_error");
                        return routed(DeliveryOutcome::Retry {
                            error: format!("submit_sm failed: {e}"),
                        });
                    }
                }
            }
        }
        routed(DeliveryOutcome::SentParts { message_ids: ids })
    }

    async fn shutdown(&self) {
        self.stop.cancel();
        let clients: Vec<Client> = self
            .binds
            .iter()
            .filter_map(|s| s.client.lock().expect("bind slot poisoned").take())
            .collect();
        for c in clients {
            let _ = c.unbind().await;
        }
    }
}

/// Keeps one bind up: connect, bind, forward what the SMSC sends, reconnect.
async fn supervise(driver: Arc<SmppDriver>, slot: Arc<BindSlot>, receipts: mpsc::Sender<Incoming>) {
    let cfg = &driver.config;
    let mut backoff = Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(cfg.reconnect_max_seconds.max(1)),
    );
    let stopping = driver.stop.cancelled();
    tokio::pin!(stopping);
    loop {
        let set_state = |s: BindState| {
            let mut guard = slot.state.lock().expect("bind slot poisoned");
            let changed = *guard != s;
            *guard = s;
            changed
        };
        let bind_config = cfg.bind_config(slot.mode, format!("{}/{}", driver.route, slot.label));
        let address = (cfg.host.as_str(), cfg.port);
        let connect = async {
            match &driver.tls {
                Some(tls) => Client::connect_tls(address, tls, bind_config).await,
                None => Client::connect(address, bind_config).await,
            }
        };
        // A stopped route must not even open a connection.
        let result = tokio::select! {
            biased;
            _ = &mut stopping => return,
            r = connect => r,
        };
        match result {
            Ok((client, mut inbound)) => {
                backoff.reset();
                set_state(BindState::Bound);
                driver.count("bound");
                tracing::info!(route = %driver.route, bind = %slot.label, "SMPP bind is up");
                *slot.client.lock().expect("bind slot poisoned") = Some(client.clone());
                let forward = {
                    let receipts = receipts.clone();
                    let driver = driver.clone();
                    async move {
                        while let Some(msg) = inbound.recv().await {
                            match msg {
                                Inbound::Receipt { receipt, pdu } => {
                                    // Kept for the unmatched-receipts list: never
                                    // the message excerpt, which may hold the code.
                                    let text = smpp::receipt::without_message_excerpt(
                                        &smpp::receipt::receipt_text(&pdu),
                                    );
                                    let _ = receipts.send(Incoming { receipt, text }).await;
                                }
                                _ => driver.count("mo_message"),
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = client.closed() => {}
                    _ = forward => {}
                    _ = &mut stopping => return,
                }
                *slot.client.lock().expect("bind slot poisoned") = None;
                set_state(BindState::Down("connection lost".into()));
                driver.count("disconnected");
                tracing::warn!(route = %driver.route, bind = %slot.label, "SMPP connection lost; reconnecting");
            }
            Err(smpp::Error::BindFailed { status }) => {
                let why = format!("the SMSC refused the bind: {status:?}");
                if set_state(BindState::BindRefused(why)) {
                    tracing::error!(
                        route = %driver.route,
                        bind = %slot.label,
                        system_id = %cfg.system_id,
                        status = ?status,
                        "SMPP bind refused: check system_id and password"
                    );
                }
                driver.count("bind_refused");
            }
            Err(e @ smpp::Error::Tls(_)) => {
                let why = e.to_string();
                if set_state(BindState::Down(why.clone())) {
                    // Escaped: the reason may quote names from the SMSC's certificate.
                    tracing::error!(
                        route = %driver.route,
                        bind = %slot.label,
                        error = ?why,
                        "SMPP over TLS: the SMSC's certificate or handshake was refused; check smpp.tls_ca_file, tls_cert_sha256 and tls_server_name"
                    );
                }
                driver.count("tls_refused");
            }
            Err(e) => {
                if set_state(BindState::Down(e.to_string())) {
                    tracing::warn!(route = %driver.route, bind = %slot.label, error = %e, "SMPP connection failed");
                }
                driver.count("connect_failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = &mut stopping => return,
        }
    }
}

fn status_of(state: Option<MessageState>) -> Option<OtpStatus> {
    match state? {
        MessageState::Delivered => Some(OtpStatus::Delivered),
        MessageState::Undeliverable => Some(OtpStatus::Undeliverable),
        MessageState::Expired => Some(OtpStatus::Expired),
        MessageState::Rejected | MessageState::Deleted => Some(OtpStatus::Rejected),
        _ => None,
    }
}

/// A receipt as a bind received it, with its text for the unmatched table.
struct Incoming {
    receipt: smpp::receipt::Receipt,
    text: String,
}

struct Pending {
    receipt: Receipt,
    /// The id as the receipt wrote it.
    raw_id: String,
    text: String,
    first_seen: Instant,
    /// Why the last try matched nothing.
    miss: &'static str,
}

/// What the receipt task of one route owns.
struct ReceiptTask {
    route: String,
    store: SharedStore,
    metrics: Arc<Metrics>,
    /// Hears of final receipts (the pumping guard counts them).
    guard: Arc<dyn super::FinalReceipts>,
    submitted: Arc<Mutex<Submitted>>,
    learner: HabitLearner,
    hold: Duration,
}

impl ReceiptTask {
    /// Finds each receipt's part: looks its id up, then lets the one rule
    /// decide. Returns the receipts that matched (with the id of their part)
    /// and those that did not (with why).
    async fn resolve(
        &mut self,
        batch: Vec<Pending>,
    ) -> Result<(Vec<Pending>, Vec<Pending>), (StoreError, Vec<Pending>)> {
        let (mut lookups, mut looked_up, mut unmatched) = (Vec::new(), Vec::new(), Vec::new());
        for mut p in batch {
            match IdLookup::of(&p.raw_id) {
                Some(l) => {
                    lookups.push(l);
                    looked_up.push(p);
                }
                None => {
                    p.miss = "too_long";
                    unmatched.push(p);
                }
            }
        }
        let candidates = match self.store.receipt_candidates(&self.route, lookups).await {
            Ok(c) => c,
            Err(e) => {
                looked_up.extend(unmatched);
                return Err((e, looked_up));
            }
        };
        let mut matched = Vec::new();
        for (mut p, found) in looked_up.into_iter().zip(candidates) {
            match decide(&p.raw_id, &found, self.learner.habit()) {
                Decision::Matched { index, evidence } => {
                    if let Some(habit) = evidence.and_then(|e| self.learner.observe(e)) {
                        tracing::info!(route = %self.route, habit = %habit, "learned how this SMSC spells receipt ids");
                    }
                    p.receipt.message_ids = vec![found[index].clone()];
                    matched.push(p);
                }
                Decision::Ambiguous => {
                    p.miss = "ambiguous";
                    unmatched.push(p);
                }
                Decision::NoMatch => {
                    p.miss = "no_match";
                    unmatched.push(p);
                }
            }
        }
        Ok((matched, unmatched))
    }

    /// Counts and keeps receipts that will not match. Repeats of a final
    /// receipt are only counted (`state="repeated"`): SMSCs send them again
    /// when an acknowledgement is late, and they are no spelling problem.
    async fn give_up(&self, lost: Vec<Pending>) {
        let (repeated, lost): (Vec<Pending>, Vec<Pending>) =
            lost.into_iter().partition(|p| p.miss == "already_final");
        for _ in &repeated {
            self.metrics.inc(
                "otpgate_smpp_receipts_total",
                &[("route", &self.route), ("state", "repeated")],
            );
        }
        if lost.is_empty() {
            return;
        }
        for _ in &lost {
            self.metrics.inc(
                "otpgate_smpp_receipts_total",
                &[("route", &self.route), ("state", "unmatched")],
            );
        }
        tracing::warn!(route = %self.route, receipts = lost.len(), "delivery receipts matched no message; see GET /admin/v1/receipts/unmatched");
        let now = now_micros();
        let rows = lost
            .into_iter()
            .map(|p| UnmatchedReceipt {
                route: self.route.clone(),
                message_id: p.raw_id,
                state: p.receipt.state,
                reason: p.miss.to_owned(),
                text: p.text,
                received_at: p.receipt.at,
            })
            .collect();
        if let Err(e) = self.store.record_unmatched_receipts(rows, now).await {
            tracing::warn!(route = %self.route, error = %e, "keeping unmatched receipts failed");
        }
    }
}

/// Held receipts tried again in one pass, at most.
const HELD_RETRIES_PER_PASS: usize = 1024;

/// Receipts held at most; past it the oldest are given up as unmatched (a
/// database outage must not grow the held list without bound).
const HELD_MAX: usize = 100_000;

/// Applies receipts in batches; holds unmatched ones and retries them.
async fn apply_receipts(mut task: ReceiptTask, mut rx: mpsc::Receiver<Incoming>) {
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        let mut batch: Vec<Pending> = Vec::new();
        let first = tokio::select! {
            r = rx.recv(), if open => r,
            _ = tokio::time::sleep(Duration::from_millis(500)), if !waiting.is_empty() => None,
        };
        match first {
            Some(r) => batch.push(convert(&task.route, r)),
            None if open && waiting.is_empty() => {
                open = false;
                continue;
            }
            None => {}
        }
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(r) => batch.push(convert(&task.route, r)),
                Err(_) => break,
            }
        }
        // Held receipts get another try, the oldest first, a bounded number a
        // pass: however many are held, a pass stays short, so the SMPP session
        // keeps reading (a full receipt channel stops it reading submit_sm
        // responses too).
        let retry = waiting.len().min(HELD_RETRIES_PER_PASS);
        batch.extend(waiting.drain(..retry));
        let (matched, unmatched) = match task.resolve(batch).await {
            Ok(split) => split,
            Err((e, batch)) => {
                tracing::warn!(error = %e, "looking up delivery receipts failed; will retry");
                waiting.extend(batch);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut lost = Vec::new();
        let mut hold = |p: Pending, lost: &mut Vec<Pending>| {
            if p.miss == "too_long" || p.first_seen.elapsed() >= task.hold {
                lost.push(p);
            } else {
                waiting.push_back(p);
            }
        };
        for p in unmatched {
            hold(p, &mut lost);
        }
        let receipts: Vec<Receipt> = matched.iter().map(|p| p.receipt.clone()).collect();
        match task.store.record_receipts(receipts).await {
            Ok(applied) => {
                task.guard.clone().receipts(
                    matched
                        .iter()
                        .zip(&applied)
                        .filter_map(|(p, m)| {
                            let id = (*m)?;
                            let status = p.receipt.status?;
                            (status == OtpStatus::Delivered || status.is_failure())
                                .then_some((id, status == OtpStatus::Delivered))
                        })
                        .collect(),
                );
                let now = now_micros();
                for (mut p, m) in matched.into_iter().zip(applied) {
                    if m.is_none() {
                        // The part already had its final receipt (a repeat,
                        // or an id the SMSC gave again to a submission not
                        // recorded yet), or its row went between lookup and
                        // update: held, so a newer part can still take it.
                        p.miss = "already_final";
                        hold(p, &mut lost);
                        continue;
                    }
                    task.metrics.inc(
                        "otpgate_smpp_receipts_total",
                        &[("route", &task.route), ("state", &p.receipt.state)],
                    );
                    let accepted = task
                        .submitted
                        .lock()
                        .expect("submitted index poisoned")
                        .take(&p.receipt.message_ids);
                    if let Some(at) = accepted {
                        task.metrics.observe(
                            "otpgate_accept_to_receipt_seconds",
                            &[("route", &task.route)],
                            (now - at).max(0) as f64 / 1e6,
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording delivery receipts failed; will retry");
                waiting.extend(matched);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        while waiting.len() > HELD_MAX {
            let mut oldest = waiting.pop_front().expect("longer than HELD_MAX");
            oldest.miss = "no_match";
            lost.push(oldest);
        }
        task.give_up(lost).await;
    }
}

fn convert(route: &str, incoming: Incoming) -> Pending {
    let r = incoming.receipt;
    let id = r.message_id.clone().unwrap_or_default();
    let state = r
        .state
        .map(|s| s.as_stat().to_owned())
        // A state word this crate does not know comes from the SMSC: keep it
        // out of metric labels, as a bounded word.
        .unwrap_or_else(|| "UNKNOWN".into());
    Pending {
        receipt: Receipt {
            route: route.to_owned(),
            message_ids: Vec::new(),
            status: status_of(r.state),
            state,
            error_code: r.error_code().map(|c| c.to_string()),
            at: now_micros(),
        },
        raw_id: id.trim().to_owned(),
        text: incoming.text,
        first_seen: Instant::now(),
        miss: "no_match",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tweak: impl FnOnce(&mut SmppConfig)) -> SubmitSettings {
        let mut config = SmppConfig {
            source_addr: "ACME".into(),
            ..SmppConfig::default()
        };
        tweak(&mut config);
        config.submit_settings().unwrap()
    }

    const SECOND: i64 = 1_000_000;

    #[test]
    fn the_default_validity_is_the_codes_remaining_life_in_whole_seconds() {
        let s = settings(|_| {});
        let now = 1_700_000_000 * SECOND;
        let sm = s
            .template("+9779851023212", false, now + 600 * SECOND - 1, now)
            .unwrap();
        assert_eq!(sm.validity_period, "000000000959000R");
        let sm = s
            .template("+9779851023212", false, now + SECOND, now)
            .unwrap();
        assert_eq!(sm.validity_period, "000000000001000R");
        assert_eq!(
            (
                sm.source_addr_ton,
                sm.source_addr_npi,
                sm.dest_addr_ton,
                sm.dest_addr_npi
            ),
            (5, 0, 1, 1)
        );
        assert_eq!(sm.destination_addr, "9779851023212");
        assert_eq!(sm.data_coding, 0);
    }

    #[test]
    fn a_code_with_less_than_a_second_left_is_not_submitted() {
        let s = settings(|_| {});
        let now = 1_700_000_000 * SECOND;
        for expires_at in [now + SECOND - 1, now, now - 60 * SECOND] {
            let err = s
                .template("+9779851023212", false, expires_at, now)
                .unwrap_err();
            assert_eq!(err, "the code expired before it reached the SMSC");
        }
        // A validity that does not follow the code sends it anyway.
        let fixed = settings(|c| c.validity_period = ValidityPeriod::Seconds(120));
        let sm = fixed
            .template("+9779851023212", false, now - SECOND, now)
            .unwrap();
        assert_eq!(sm.validity_period, "000000000200000R");
        let smsc = settings(|c| c.validity_period = ValidityPeriod::Named("smsc_default".into()));
        assert_eq!(
            smsc.template("+9779851023212", false, now, now)
                .unwrap()
                .validity_period,
            ""
        );
    }

    #[test]
    fn an_accounts_sender_replaces_the_routes_with_the_ton_and_npi_of_its_form() {
        let s = settings(|c| {
            c.source_addr = "ROUTE".into();
            c.source_ton = Some(1);
            c.source_npi = Some(1);
        });
        let mut sm = s.template("+9779851023212", false, i64::MAX, 0).unwrap();
        for (sender, ton, npi) in [("ACME", 5, 0), ("31337", 3, 0), ("9779801234567", 1, 1)] {
            send_as(&mut sm, &SenderId::parse(sender).unwrap());
            assert_eq!(
                (
                    sm.source_addr.as_str(),
                    sm.source_addr_ton,
                    sm.source_addr_npi
                ),
                (sender, ton, npi)
            );
        }
        assert_eq!(
            sm.destination_addr, "9779851023212",
            "only the source changes"
        );
    }

    #[test]
    fn national_form_drops_the_country_code_of_any_country() {
        assert_eq!(national_number("+9779851023212").unwrap(), "9851023212");
        assert_eq!(national_number("+14155552671").unwrap(), "4155552671");
        assert_eq!(national_number("+447911123456").unwrap(), "7911123456");
        let s = settings(|c| c.destination_format = "national".into());
        let sm = s.template("+9779851023212", true, i64::MAX, 0).unwrap();
        assert_eq!(
            (
                sm.destination_addr.as_str(),
                sm.dest_addr_ton,
                sm.dest_addr_npi
            ),
            ("9851023212", 2, 1)
        );
        assert_eq!(sm.data_coding, 8, "UCS-2 whatever gsm_data_coding says");
    }

    #[test]
    fn the_settings_come_from_the_route_table_with_validity_as_a_name_or_seconds() {
        use figment::Figment;
        use figment::providers::{Format, Toml};
        let route = |extra: &str| {
            let toml = format!(
                "[[routes]]\nname = \"ntc\"\nchannel = \"text\"\ndriver = \"smpp\"\n\
                 [routes.smpp]\nsystem_id = \"acme\"\n{extra}"
            );
            Figment::new()
                .merge(Toml::string(&toml))
                .extract::<crate::config::Config>()
                .ok()
                .map(|c| match &c.routes[0].driver {
                    crate::config::DriverConfig::Smpp(smpp) => smpp.clone(),
                    other => panic!("an smpp route read as {other:?}"),
                })
        };
        let defaults = route("").unwrap();
        assert_eq!(
            defaults.validity_period,
            ValidityPeriod::Named("remaining".into())
        );
        assert_eq!(
            (defaults.bind_mode.as_str(), defaults.tls),
            ("transceiver", false)
        );
        let tuned = route(
            "validity_period = 300\nsource_ton = 1\nsource_npi = 1\n\
             destination_format = \"national\"\ndestination_ton = 2\ndestination_npi = 1\n\
             service_type = \"OTP\"\npriority_flag = 2\ngsm_data_coding = 1\n\
             bind_mode = \"transmitter_receiver\"\npdu_trace = true\ntls = true\n\
             tls_cert_sha256 = \"AB:CD\"\ntls_server_name = \"smsc\"\n",
        )
        .unwrap();
        assert_eq!(tuned.validity_period, ValidityPeriod::Seconds(300));
        assert_eq!(
            (tuned.source_ton, tuned.destination_npi),
            (Some(1), Some(1))
        );
        assert_eq!((tuned.priority_flag, tuned.gsm_data_coding), (2, 1));
        assert!(tuned.pdu_trace && tuned.tls);
        let named = route("validity_period = \"smsc_default\"").unwrap();
        assert_eq!(
            named.validity_period,
            ValidityPeriod::Named("smsc_default".into())
        );
        assert!(route("validity_period = true").is_none());
        assert!(route("priority_flag = 256").is_none());
        assert!(
            route("tls_ca = \"x\"").is_none(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn receipt_ids_takes_the_four_words_and_refuses_others() {
        for (word, format) in [
            ("auto", IdFormat::Auto),
            ("text", IdFormat::Fixed(smpp::receipt::ids::Habit::Text)),
            ("hex", IdFormat::Fixed(smpp::receipt::ids::Habit::Hex)),
            (
                "decimal",
                IdFormat::Fixed(smpp::receipt::ids::Habit::Decimal),
            ),
        ] {
            let config = SmppConfig {
                receipt_ids: word.into(),
                ..SmppConfig::default()
            };
            assert_eq!(config.receipt_ids().unwrap(), format);
        }
        let bad = SmppConfig {
            receipt_ids: "same".into(),
            ..SmppConfig::default()
        };
        let error = bad.receipt_ids().unwrap_err().to_string();
        assert!(error.contains("auto, text, hex, decimal"), "{error}");
        assert_eq!(SmppConfig::default().receipt_ids().unwrap(), IdFormat::Auto);
    }

    #[test]
    fn receipt_states_map_to_final_statuses() {
        assert_eq!(
            status_of(Some(MessageState::Delivered)),
            Some(OtpStatus::Delivered)
        );
        assert_eq!(
            status_of(Some(MessageState::Undeliverable)),
            Some(OtpStatus::Undeliverable)
        );
        assert_eq!(
            status_of(Some(MessageState::Expired)),
            Some(OtpStatus::Expired)
        );
        assert_eq!(
            status_of(Some(MessageState::Deleted)),
            Some(OtpStatus::Rejected)
        );
        assert_eq!(status_of(Some(MessageState::Enroute)), None);
        assert_eq!(status_of(None), None);
    }
}
