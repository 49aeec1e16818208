//! The `sip` driver: a voice OTP becomes a call through a SIP trunk that plays the
//! rendered prompt (`crates/sip` places it).
//!
//! One attempt renders the prompt (before taking a call slot), waits for one of
//! `max_calls` slots, calls `sip:<E.164 digits without +>@<domain>` (for
//! `+9779851023212` and domain `trunk.example.com`:
//! `sip:9779851023212@trunk.example.com`) and maps how the call ended:
//!
//! | call | outcome |
//! |---|---|
//! | answered, prompt played to the end | `Sent`, provider id = the SIP Call-ID |
//! | answered, callee hung up after the code was read out once in full | `Sent` |
//! | answered, callee hung up (or the line dropped) before that | `Retry` |
//! | answered, cut by `max_call_seconds` before the first full reading | `Failed` |
//! | busy, declined, no answer, unreachable, unusable SDP answer | `Retry` |
//! | 401/407 our credentials cannot answer | `Retry` (an operator fixes them) |
//! | 3xx (not followed), 403, 408, 429, 480, 5xx | `Retry` |
//! | other 4xx (404, 484 ...), 604, 606 | `Failed` |
//! | espeak-ng missing, timed out or crashed | `Retry` |
//! | a prompt that cannot be spoken | `Failed` |
//! | a fallback call whose code was verified while it rang: cancelled | `Failed` (the fallback is `cancelled`, its credit refunded) |
//!
//! The dispatcher retries with backoff while the code is still useful
//! (`delivery.give_up_after_seconds`), then fails the OTP and refunds its phone
//! credit. "Read out once" is measured, not guessed: the length of the same prompt
//! rendered up to the end of its first code, said once.
//!
//! Each call's timeline (INVITE, ringing, answer, end) goes to the log with the
//! Call-ID, and into the error of an attempt that is retried or failed. Nothing
//! here logs the code or the message.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sip::{
    CallOutcome, CallReport, CallerId, Credentials, Hangup, Password, SipClient, SipUri, Timeline,
    TransportKind, TrunkConfig,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use otp_domain::sender::SenderId;
use otp_store::ClaimedJob;

use super::{Prompt, Prompter};
use otp_domain::secret::Secret;

use super::settings::VoiceConfig;
use crate::delivery::{DeliveryOutcome, Driver, RouteHealth};

/// RFC 3261 T1 as the client uses it; Timer B and Timer F are 64 times this.
const T1: Duration = Duration::from_millis(500);

/// `[routes.sip]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// The trunk or outbound proxy every request goes to, `IP:PORT` (required).
    pub proxy: String,
    /// Our address: SIP and RTP sockets bind to it and it is advertised in `Via`,
    /// `Contact` and SDP, so the trunk must be able to reach it.
    pub local_ip: String,
    /// The host of the Request-URI and of our `From`; empty: `proxy`.
    pub domain: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Digest user for 401/407 challenges; empty: no credentials.
    pub username: String,
    pub password: Secret<String>,
    /// Calls up at once through this trunk (its channel limit).
    pub max_calls: usize,
    /// `From` user; default `voice.caller_id`.
    pub caller_id: Option<String>,
    /// `From` display name; default `voice.caller_name`.
    pub caller_name: Option<String>,
    /// Default `voice.ring_timeout_seconds`.
    pub ring_timeout_seconds: Option<u64>,
    /// Default `voice.max_call_seconds`.
    pub max_call_seconds: Option<u64>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            proxy: String::new(),
            local_ip: "127.0.0.1".into(),
            domain: String::new(),
            transport: "udp".into(),
            username: String::new(),
            password: Secret::default(),
            max_calls: 8,
            caller_id: None,
            caller_name: None,
            ring_timeout_seconds: None,
            max_call_seconds: None,
        }
    }
}

/// A `[routes.sip]` table that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A field has a value the driver cannot use.
    #[error("{field}: {reason}")]
    Invalid {
        field: &'static str,
        /// What is wrong (never the value of a secret).
        reason: String,
    },
    /// The SIP client refused the settings (a domain or caller id that cannot go
    /// into a header, a zero timer).
    #[error(transparent)]
    Call(#[from] sip::ConfigError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Places voice OTP calls through one trunk.
pub struct SipDriver {
    route: String,
    client: SipClient,
    caller: CallerId,
    domain: String,
    prompter: Arc<Prompter>,
    calls: Arc<Semaphore>,
    max_calls: usize,
    render_timeout: Duration,
}

impl SipDriver {
    /// Checks the table (with `[voice]` for what it leaves out); places no call.
    pub fn new(
        route: &str,
        config: &SipConfig,
        voice: &VoiceConfig,
        prompter: Arc<Prompter>,
    ) -> Result<SipDriver, BuildError> {
        let proxy: SocketAddr = config
            .proxy
            .parse()
            .map_err(|_| invalid("proxy", "must be IP:PORT, e.g. 192.0.2.10:5060"))?;
        let local_ip: IpAddr = config
            .local_ip
            .parse()
            .map_err(|_| invalid("local_ip", "must be an IP address"))?;
        let transport = match config.transport.as_str() {
            "udp" => TransportKind::Udp,
            "tcp" => TransportKind::Tcp,
            _ => return Err(invalid("transport", "must be udp or tcp")),
        };
        if config.max_calls == 0 {
            return Err(invalid("max_calls", "must be at least 1"));
        }
        let domain = if config.domain.is_empty() {
            proxy.to_string()
        } else {
            config.domain.clone()
        };
        let mut trunk = TrunkConfig::new(proxy, local_ip, domain.clone());
        trunk.transport = transport;
        trunk.t1 = T1;
        trunk.ring_timeout = Duration::from_secs(
            config
                .ring_timeout_seconds
                .unwrap_or(voice.ring_timeout_seconds),
        );
        trunk.max_duration =
            Duration::from_secs(config.max_call_seconds.unwrap_or(voice.max_call_seconds));
        if !config.username.is_empty() {
            trunk.credentials = Some(Credentials {
                username: config.username.clone(),
                password: Password::new(config.password.expose().clone()),
            });
        }
        trunk.user_agent = concat!("otpgate/", env!("CARGO_PKG_VERSION")).to_owned();
        let caller_id = config.caller_id.as_deref().unwrap_or(&voice.caller_id);
        let caller_name = config.caller_name.as_deref().unwrap_or(&voice.caller_name);
        let caller = CallerId::new(caller_id, Some(caller_name).filter(|n| !n.is_empty()))?;
        Ok(SipDriver {
            route: route.to_owned(),
            client: SipClient::new(trunk)?,
            caller,
            domain,
            prompter,
            calls: Arc::new(Semaphore::new(config.max_calls)),
            max_calls: config.max_calls,
            render_timeout: Duration::from_millis(voice.render_timeout_ms),
        })
    }

    /// The longest one attempt can take: two renders, ringing and its CANCEL,
    /// the call and its BYE. A job's lease must outlast it, or another worker
    /// would claim the job mid-call and ring the phone twice.
    pub fn longest_attempt(&self) -> Duration {
        let trunk = self.client.config();
        2 * self.render_timeout + trunk.ring_timeout + trunk.max_duration + 2 * 64 * T1
    }

    /// The Request-URI for an E.164 number.
    fn target(&self, e164: &str) -> Result<SipUri, sip::ConfigError> {
        SipUri::from_parts(e164.trim_start_matches('+'), &self.domain)
    }

    async fn attempt(&self, job: &ClaimedJob, unwanted: &CancellationToken) -> DeliveryOutcome {
        let otp = &job.otp;
        let Some(prompt) = Prompt::of(otp) else {
            return DeliveryOutcome::Failed {
                error: "not a voice OTP".into(),
            };
        };
        let to = match self.target(otp.number.as_str()) {
            Ok(to) => to,
            Err(e) => {
                return DeliveryOutcome::Failed {
                    error: format!("no SIP address for this number: {e}"),
                };
            }
        };
        let audio = match self.prompter.render(&prompt).await {
            Ok(audio) => audio,
            Err(e) if e.is_transient() => {
                tracing::warn!(route = %self.route, otp_id = otp.id, error = %e, "rendering a voice prompt failed");
                return DeliveryOutcome::Retry {
                    error: format!("rendering the prompt failed: {e}"),
                };
            }
            Err(e) => {
                return DeliveryOutcome::Failed {
                    error: e.to_string(),
                };
            }
        };
        // A slot is taken only for the call itself; renders wait on their own limit.
        let _slot = self
            .calls
            .acquire()
            .await
            .expect("the call semaphore is never closed");
        let (route, otp_id) = (self.route.as_str(), otp.id);
        let report = self
            .client
            .call_until(
                &to,
                &self.caller,
                audio.samples(),
                &mut |p| {
                    tracing::debug!(route, otp_id, progress = ?p, "call progress");
                },
                unwanted.cancelled(),
            )
            .await;
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(route, otp_id, error = %e, "placing a call failed");
                return DeliveryOutcome::Retry {
                    error: format!("placing the call failed: {e}"),
                };
            }
        };
        let heard_once = match report.outcome {
            CallOutcome::Answered {
                completed: false, ..
            } => self.prompter.first_reading_ends(&prompt).await.ok(),
            _ => None,
        };
        let outcome = classify(&report, heard_once);
        let timeline = describe(&report.timeline);
        tracing::info!(
            route,
            otp_id,
            call_id = %report.call_id,
            call = ?report.outcome,
            %timeline,
            prompt_seconds = audio.duration().as_secs_f64(),
            "call ended"
        );
        outcome
    }
}

/// What an attempt's call means for the OTP. `heard_once` is how far into the
/// prompt the code had been read out once in full, when known.
fn classify(report: &CallReport, heard_once: Option<Duration>) -> DeliveryOutcome {
    let note = |what: String| {
        format!(
            "{what}; call {}: {}",
            report.call_id,
            describe(&report.timeline)
        )
    };
    let retry = |what: String| DeliveryOutcome::Retry { error: note(what) };
    let failed = |what: String| DeliveryOutcome::Failed { error: note(what) };
    let sent = DeliveryOutcome::Sent {
        provider_message_id: Some(report.call_id.clone()),
    };
    match &report.outcome {
        CallOutcome::Answered {
            completed: true, ..
        } => sent,
        CallOutcome::Answered { played, hangup, .. } => {
            if heard_once.is_some_and(|at| *played >= at) {
                return sent;
            }
            let before = match heard_once {
                Some(at) => format!("before the code was read out once ({:.1} s)", secs(at)),
                None => "before the end of the prompt".to_owned(),
            };
            let played = secs(*played);
            match hangup {
                Hangup::MaxDuration => failed(format!(
                    "the call reached max_call_seconds after {played:.1} s of audio, {before}; \
                     the prompt is longer than a call may last"
                )),
                Hangup::ConnectionLost => retry(format!(
                    "the connection to the trunk was lost after {played:.1} s of audio, {before}"
                )),
                Hangup::Callee | Hangup::AudioEnded => retry(format!(
                    "the callee hung up after {played:.1} s of audio, {before}"
                )),
            }
        }
        CallOutcome::Busy { status } => retry(format!("busy ({status})")),
        CallOutcome::Declined => retry("declined (603)".into()),
        CallOutcome::NoAnswer { status } => retry(match status {
            Some(s) => format!("no answer ({s})"),
            None => "no answer".into(),
        }),
        CallOutcome::Unreachable { reason } => retry(format!("trunk unreachable: {reason}")),
        CallOutcome::AuthFailed { status } => retry(format!(
            "the trunk refused our credentials ({status}); check routes.sip.username and password"
        )),
        CallOutcome::MediaFailed { reason } => {
            retry(format!("the callee's SDP answer is unusable: {reason}"))
        }
        CallOutcome::Rejected { status, reason } => {
            let said = format!(
                "rejected: {status} {}",
                crate::delivery::http::scrub(reason, &[])
            );
            if is_permanent(*status) {
                failed(said)
            } else {
                retry(said)
            }
        }
        CallOutcome::Abandoned { answered: false } => failed(
            "the code was verified while the call was ringing; the call was cancelled".into(),
        ),
        CallOutcome::Abandoned { answered: true } => {
            failed("the code was verified as the call was answered; it was hung up at once".into())
        }
        other => retry(format!("call ended: {other:?}")),
    }
}

/// Final statuses that say this number cannot be called, now or later.
fn is_permanent(status: u16) -> bool {
    match status {
        // Auth, "not now", and the trunk's own trouble: time or an operator fixes them.
        401 | 403 | 407 | 408 | 429 | 480 | 486 | 487 | 491 => false,
        400..=499 => true,
        604 | 606 => true,
        _ => false,
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `INVITE, ringing +0.05 s, answered +1.20 s, ended +9.80 s`, offsets from the
/// first INVITE.
fn describe(t: &Timeline) -> String {
    let Some(start) = t.invite_sent else {
        return "no INVITE sent".into();
    };
    let mut out = String::from("INVITE");
    let offset = |at: SystemTime| at.duration_since(start).unwrap_or_default();
    for (name, at) in [
        ("ringing", t.ringing),
        ("answered", t.answered),
        ("ended", t.ended),
    ] {
        if let Some(at) = at {
            // Writing to a String cannot fail.
            let _ = write!(out, ", {name} +{:.2} s", secs(offset(at)));
        }
    }
    out
}

#[async_trait::async_trait]
impl Driver for SipDriver {
    fn name(&self) -> &'static str {
        "sip"
    }

    fn capacity(&self) -> usize {
        self.max_calls
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        self.attempt(job, &CancellationToken::new()).await
    }

    /// A call `unwanted` before it is answered is cancelled (or not placed).
    async fn deliver_watched(
        &self,
        job: &ClaimedJob,
        _sender: Option<&SenderId>,
        unwanted: &CancellationToken,
    ) -> DeliveryOutcome {
        self.attempt(job, unwanted).await
    }

    fn health(&self) -> Vec<RouteHealth> {
        vec![RouteHealth {
            route: self.route.clone(),
            connection: self.client.config().proxy.to_string(),
            // SIP keeps no standing connection: each call opens its own.
            status: "ready".into(),
            detail: None,
            in_flight: self.max_calls - self.calls.available_permits(),
            state: "active",
        }]
    }

    /// Waits for calls in progress; the dispatcher already waited for their
    /// deliveries, so this only guards a caller that did not.
    async fn shutdown(&self) {
        let _ = self.calls.acquire_many(self.max_calls as u32).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: CallOutcome) -> CallReport {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        CallReport {
            outcome,
            timeline: Timeline {
                invite_sent: Some(t0),
                ringing: Some(t0 + Duration::from_millis(50)),
                answered: None,
                ended: Some(t0 + Duration::from_millis(1200)),
            },
            codec: None,
            remote_rtp: None,
            call_id: "abc@127.0.0.1".into(),
        }
    }

    fn answered(played_ms: u64, completed: bool, hangup: Hangup) -> CallOutcome {
        CallOutcome::Answered {
            played: Duration::from_millis(played_ms),
            completed,
            hangup,
        }
    }

    fn kind(o: &DeliveryOutcome) -> &'static str {
        match o {
            DeliveryOutcome::Sent { .. } => "sent",
            DeliveryOutcome::Retry { .. } => "retry",
            DeliveryOutcome::Failed { .. } => "failed",
            _ => "other",
        }
    }

    #[test]
    fn a_prompt_played_to_the_end_is_sent_under_its_call_id() {
        let o = classify(&report(answered(9000, true, Hangup::AudioEnded)), None);
        assert_eq!(
            o,
            DeliveryOutcome::Sent {
                provider_message_id: Some("abc@127.0.0.1".into())
            }
        );
    }

    #[test]
    fn hanging_up_counts_as_heard_only_after_the_first_full_reading() {
        let at = Some(Duration::from_secs(5));
        let early = classify(&report(answered(2000, false, Hangup::Callee)), at);
        assert_eq!(kind(&early), "retry");
        let DeliveryOutcome::Retry { error } = early else {
            unreachable!()
        };
        assert!(error.contains("hung up after 2.0 s"), "{error}");
        assert!(error.contains("call abc@127.0.0.1: INVITE, ringing +0.05 s, ended +1.20 s"));
        let late = classify(&report(answered(6000, false, Hangup::Callee)), at);
        assert_eq!(kind(&late), "sent");
        // Without the measure, only the whole prompt counts.
        let unknown = classify(&report(answered(6000, false, Hangup::Callee)), None);
        assert_eq!(kind(&unknown), "retry");
        let cut = classify(&report(answered(2000, false, Hangup::MaxDuration)), at);
        assert_eq!(kind(&cut), "failed");
    }

    #[test]
    fn refusals_that_time_or_an_operator_can_fix_are_retried() {
        for outcome in [
            CallOutcome::Busy { status: 486 },
            CallOutcome::Declined,
            CallOutcome::NoAnswer { status: Some(487) },
            CallOutcome::Unreachable {
                reason: "refused".into(),
            },
            CallOutcome::AuthFailed { status: 401 },
            CallOutcome::Rejected {
                status: 503,
                reason: "Service Unavailable".into(),
            },
            CallOutcome::Rejected {
                status: 403,
                reason: "Forbidden".into(),
            },
        ] {
            assert_eq!(
                kind(&classify(&report(outcome.clone()), None)),
                "retry",
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn a_number_the_network_does_not_know_fails_for_good() {
        for status in [404, 484, 604] {
            let o = classify(
                &report(CallOutcome::Rejected {
                    status,
                    reason: "Not Found\r\nX: y".into(),
                }),
                None,
            );
            let DeliveryOutcome::Failed { error } = o else {
                panic!("{status}: {o:?}")
            };
            assert!(
                error.starts_with(&format!("rejected: {status} Not Found")),
                "{error}"
            );
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn the_request_uri_is_the_e164_digits_at_the_domain() {
        let prompter = Arc::new(Prompter::new(&VoiceConfig::default()).unwrap());
        let config = SipConfig {
            proxy: "127.0.0.1:5060".into(),
            domain: "trunk.example.com".into(),
            ..SipConfig::default()
        };
        let driver = SipDriver::new("t", &config, &VoiceConfig::default(), prompter).unwrap();
        assert_eq!(
            driver.target("+9779851023212").unwrap().as_str(),
            "sip:9779851023212@trunk.example.com"
        );
        assert_eq!(driver.capacity(), 8);
    }

    #[test]
    fn bad_tables_name_the_field() {
        let prompter = Arc::new(Prompter::new(&VoiceConfig::default()).unwrap());
        let voice = VoiceConfig::default();
        let build = |config: SipConfig| {
            SipDriver::new("t", &config, &voice, prompter.clone())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(build(SipConfig::default()).starts_with("proxy:"));
        let ok = SipConfig {
            proxy: "127.0.0.1:5060".into(),
            ..SipConfig::default()
        };
        assert!(
            build(SipConfig {
                transport: "tls".into(),
                ..ok.clone()
            })
            .starts_with("transport:")
        );
        assert!(
            build(SipConfig {
                max_calls: 0,
                ..ok.clone()
            })
            .starts_with("max_calls:")
        );
        assert!(
            build(SipConfig {
                caller_id: Some("has space".into()),
                ..ok
            })
            .contains("caller id")
        );
    }
}
