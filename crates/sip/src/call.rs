//! Placing one call: the INVITE transaction, authentication, the dialog, media, hang-up.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::digest::{Challenge, Credentials, new_cnonce};
use crate::media::{Codec, send_paced};
use crate::message::{Message, Method, StartLine, uri_of};
use crate::sdp::{self, Direction, Offer, SdpError};
use crate::transport::{Transport, TransportKind};

/// A `sip:` URI to call, checked once at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri(String);

impl SipUri {
    /// Accepts `sip:[user@]host[:port][;params]` without spaces, quotes or angle brackets.
    pub fn parse(uri: &str) -> Result<SipUri, ConfigError> {
        let bad = || ConfigError::BadUri(uri.to_owned());
        let rest = uri.strip_prefix("sip:").ok_or_else(bad)?;
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = host.split([';', '?']).next().unwrap_or("");
        if host.is_empty()
            || host.starts_with(':')
            || uri
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
        {
            return Err(bad());
        }
        Ok(SipUri(uri.to_owned()))
    }

    /// `sip:user@host`, with the user part checked like [`SipUri::parse`] checks the whole.
    pub fn from_parts(user: &str, host: &str) -> Result<SipUri, ConfigError> {
        if user.is_empty() || user.contains(['@', ':', ';']) {
            return Err(ConfigError::BadUri(format!("sip:{user}@{host}")));
        }
        SipUri::parse(&format!("sip:{user}@{host}"))
    }

    /// The URI text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who the call is from: the `From` user part and an optional display name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerId {
    user: String,
    display_name: Option<String>,
}

impl CallerId {
    /// A user part (digits, letters, `+-_.!~*'()`) and a display name without quotes,
    /// backslashes or control characters.
    pub fn new(user: &str, display_name: Option<&str>) -> Result<CallerId, ConfigError> {
        let user_ok = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-_.!~*'()".contains(c));
        if !user_ok {
            return Err(ConfigError::BadCallerId(user.to_owned()));
        }
        if let Some(name) = display_name
            && name
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return Err(ConfigError::BadCallerId(name.to_owned()));
        }
        Ok(CallerId {
            user: user.to_owned(),
            display_name: display_name.map(str::to_owned),
        })
    }
}

/// How to reach the trunk and how calls behave. Shared by every call of a [`SipClient`].
#[derive(Clone, Debug)]
pub struct TrunkConfig {
    /// Where every request goes: the trunk or an outbound proxy.
    pub proxy: SocketAddr,
    /// UDP or TCP.
    pub transport: TransportKind,
    /// The host part of our `From` URI (the trunk's domain, or our own address).
    pub domain: String,
    /// The address we bind SIP and RTP sockets to and advertise in `Via`, `Contact` and SDP.
    pub local_ip: IpAddr,
    /// Answers 401 and 407 challenges; `None` treats any challenge as [`CallOutcome::AuthFailed`].
    pub credentials: Option<Credentials>,
    /// How long the callee may ring before we CANCEL. Default 30 s.
    pub ring_timeout: Duration,
    /// The longest call from answer to BYE. Default 120 s.
    pub max_duration: Duration,
    /// Codecs offered, in preference order. Default PCMU, PCMA.
    pub codecs: Vec<Codec>,
    /// Our audio stream's direction. Default sendrecv.
    pub direction: Direction,
    /// RFC 3261 T1, the round-trip estimate retransmissions start from. Default 500 ms.
    pub t1: Duration,
    /// Silence kept after the last packet before BYE, so the callee's jitter buffer plays
    /// out the end of the audio. Default 400 ms.
    pub hangup_delay: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl TrunkConfig {
    /// Defaults for a trunk at `proxy`, binding to `local_ip`, with From domain `domain`.
    pub fn new(proxy: SocketAddr, local_ip: IpAddr, domain: impl Into<String>) -> TrunkConfig {
        TrunkConfig {
            proxy,
            transport: TransportKind::Udp,
            domain: domain.into(),
            local_ip,
            credentials: None,
            ring_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(120),
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            direction: Direction::SendRecv,
            t1: Duration::from_millis(500),
            hangup_delay: Duration::from_millis(400),
            user_agent: concat!("otpgate-sip/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not a usable `sip:` URI.
    #[error("not a usable sip: URI: {0:?}")]
    BadUri(String),
    /// A caller id user or display name that cannot go into a `From` header.
    #[error("caller id {0:?} cannot go into a From header")]
    BadCallerId(String),
    /// The trunk domain is empty or has characters a host cannot have.
    #[error("bad trunk domain {0:?}")]
    BadDomain(String),
    /// No codecs, or a timer of zero.
    #[error("invalid call settings: {0}")]
    Invalid(&'static str),
}

/// A failure on our side, before any SIP went out.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CallError {
    /// Binding the local RTP or SIP socket failed (is `local_ip` ours?).
    #[error("binding a local socket on {local_ip}")]
    Bind {
        /// The configured address.
        local_ip: IpAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Why an answered call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hangup {
    /// The audio was played to the end and we sent BYE.
    AudioEnded,
    /// The callee sent BYE before the audio ended.
    Callee,
    /// [`TrunkConfig::max_duration`] passed; we sent BYE.
    MaxDuration,
    /// The TCP connection broke (or the peer became unreachable) mid-call.
    ConnectionLost,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallOutcome {
    /// The callee answered and we played audio.
    Answered {
        /// Audio sent (20 ms per packet), not necessarily heard.
        played: Duration,
        /// Every packet of the audio was sent.
        completed: bool,
        /// Who or what ended the call.
        hangup: Hangup,
    },
    /// 486 Busy Here or 600 Busy Everywhere.
    Busy {
        /// The status.
        status: u16,
    },
    /// 603 Decline.
    Declined,
    /// The ring timeout passed (we cancelled), or 408 / 480 / 487 came back.
    NoAnswer {
        /// The final status, if one came (487 after our CANCEL).
        status: Option<u16>,
    },
    /// No response within 64×T1, a refused connection, or another transport failure.
    Unreachable {
        /// What happened.
        reason: String,
    },
    /// A 401/407 with no credentials configured, or again after we answered one.
    AuthFailed {
        /// 401 or 407.
        status: u16,
    },
    /// The callee answered with SDP we cannot use; we ACKed and sent BYE at once.
    MediaFailed {
        /// Why the answer was unusable.
        reason: SdpError,
    },
    /// The caller abandoned the call before it was answered
    /// ([`SipClient::call_until`]): a ringing INVITE was cancelled, or one that was
    /// answered as the CANCEL crossed the 200 was ACKed and hung up at once.
    Abandoned {
        /// A 200 OK crossed our CANCEL, so the call was up for a moment.
        answered: bool,
    },
    /// Any other final status (3xx redirects are not followed).
    Rejected {
        /// The status.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
}

/// Moments of a call, for the gateway's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// The first INVITE left.
    pub invite_sent: Option<SystemTime>,
    /// The first 180 or 183.
    pub ringing: Option<SystemTime>,
    /// The 200 OK to INVITE.
    pub answered: Option<SystemTime>,
    /// The call was over (BYE answered or given up, final response ACKed).
    pub ended: Option<SystemTime>,
}

/// An event while a call is in progress, reported as it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// An INVITE was sent (again after a challenge).
    InviteSent,
    /// 180 or 183 arrived.
    Ringing {
        /// The status.
        status: u16,
    },
    /// 200 OK arrived and media will flow with this codec.
    Answered {
        /// The negotiated codec.
        codec: Codec,
    },
}

/// What [`SipClient::call`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallReport {
    /// How the call ended.
    pub outcome: CallOutcome,
    /// When things happened.
    pub timeline: Timeline,
    /// The negotiated codec, if the call was answered with usable SDP.
    pub codec: Option<Codec>,
    /// Where RTP was sent, from the SDP answer.
    pub remote_rtp: Option<SocketAddr>,
    /// The `Call-ID`, for correlating with the trunk's logs.
    pub call_id: String,
}

/// Places calls through one trunk. Cheap to clone; every call has its own sockets, so any
/// number may run at once (the caller bounds how many).
#[derive(Clone, Debug)]
pub struct SipClient {
    config: Arc<TrunkConfig>,
}

impl SipClient {
    /// Checks the configuration.
    pub fn new(config: TrunkConfig) -> Result<SipClient, ConfigError> {
        if config.codecs.is_empty() {
            return Err(ConfigError::Invalid("no codecs"));
        }
        if config.t1.is_zero() || config.ring_timeout.is_zero() || config.max_duration.is_zero() {
            return Err(ConfigError::Invalid(
                "t1, ring_timeout and max_duration must be > 0",
            ));
        }
        if config.domain.is_empty()
            || config
                .domain
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>\"@;".contains(c))
        {
            return Err(ConfigError::BadDomain(config.domain.clone()));
        }
        Ok(SipClient {
            config: Arc::new(config),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TrunkConfig {
        &self.config
    }

    /// Calls `to` as `caller`, plays `audio` (8 kHz mono) once answered, hangs up.
    pub async fn call(
        &self,
        to: &SipUri,
        caller: &CallerId,
        audio: &[i16],
    ) -> Result<CallReport, CallError> {
        self.call_with_progress(to, caller, audio, &mut |_| {})
            .await
    }

    /// [`SipClient::call`], reporting each [`Progress`] as it happens.
    pub async fn call_with_progress(
        &self,
        to: &SipUri,
        caller: &CallerId,
        audio: &[i16],
        on_progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<CallReport, CallError> {
        self.call_until(to, caller, audio, on_progress, std::future::pending())
            .await
    }

    /// [`SipClient::call_with_progress`], given up when `abandon` completes before the
    /// callee answers: the call is not placed if `abandon` is already complete; an
    /// INVITE that is ringing (or, once it is, one not yet answered) is cancelled; a
    /// 200 OK that crosses the CANCEL is ACKed and hung up at once. Each of these is
    /// [`CallOutcome::Abandoned`]. Once the audio plays, `abandon` is no longer
    /// watched: the call ends as any answered call does.
    pub async fn call_until(
        &self,
        to: &SipUri,
        caller: &CallerId,
        audio: &[i16],
        on_progress: &mut (dyn FnMut(Progress) + Send),
        abandon: impl Future<Output = ()> + Send,
    ) -> Result<CallReport, CallError> {
        let mut abandon = Box::pin(abandon);
        if is_ready_now(abandon.as_mut()) {
            let now = SystemTime::now();
            return Ok(CallReport {
                outcome: CallOutcome::Abandoned { answered: false },
                timeline: Timeline {
                    invite_sent: None,
                    ringing: None,
                    answered: None,
                    ended: Some(now),
                },
                codec: None,
                remote_rtp: None,
                call_id: String::new(),
            });
        }
        let config = &*self.config;
        let bind = |source| CallError::Bind {
            local_ip: config.local_ip,
            source,
        };
        let rtp = UdpSocket::bind(SocketAddr::new(config.local_ip, 0))
            .await
            .map_err(bind)?;
        let rtp_port = rtp.local_addr().map_err(bind)?.port();
        let call_id = format!("{}@{}", random_token(), config.local_ip);
        let mut timeline = Timeline {
            invite_sent: None,
            ringing: None,
            answered: None,
            ended: None,
        };
        let transport =
            match Transport::connect(config.transport, config.local_ip, config.proxy).await {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => return Err(bind(e)),
                Err(e) => {
                    timeline.ended = Some(SystemTime::now());
                    return Ok(CallReport {
                        outcome: CallOutcome::Unreachable {
                            reason: format!("connecting to {}: {e}", config.proxy),
                        },
                        timeline,
                        codec: None,
                        remote_rtp: None,
                        call_id,
                    });
                }
            };
        let local = transport.local_addr().map_err(bind)?;
        let from = match &caller.display_name {
            Some(name) => format!("\"{name}\" <sip:{}@{}>", caller.user, config.domain),
            None => format!("<sip:{}@{}>", caller.user, config.domain),
        };
        let transport_param = match config.transport {
            TransportKind::Udp => "",
            TransportKind::Tcp => ";transport=tcp",
        };
        let mut call = CallState {
            config,
            transport,
            local,
            call_id: call_id.clone(),
            from: format!("{from};tag={}", random_token()),
            to: format!("<{to}>"),
            request_uri: to.as_str().to_owned(),
            contact: format!(
                "<sip:{}@{}{transport_param}>",
                caller.user,
                host_port(local)
            ),
            cseq: 0,
            timeline,
            on_progress,
            offer: Offer {
                session_id: rand::random::<u32>().into(),
                address: config.local_ip,
                port: rtp_port,
                codecs: config.codecs.clone(),
                direction: config.direction,
            }
            .to_sdp(),
            acks: Vec::new(),
            abandon,
            abandoned: false,
        };
        let (outcome, media) = call.run(&rtp, audio).await;
        call.timeline.ended = Some(SystemTime::now());
        Ok(CallReport {
            outcome,
            timeline: call.timeline,
            codec: media.map(|m| m.codec),
            remote_rtp: media.map(|m| m.destination),
            call_id,
        })
    }
}

/// The far end of an established dialog.
struct Dialog {
    /// `To` of the 200 OK, with the callee's tag.
    to: String,
    /// The callee's `Contact`: the Request-URI of ACK and BYE.
    remote_target: String,
    /// `Route` headers for in-dialog requests: the 200's `Record-Route`, reversed.
    route: Vec<String>,
    /// The INVITE's CSeq number, which the ACK repeats.
    invite_cseq: u32,
}

/// A CANCEL sent: the request, its next retransmission (UDP), the interval, and when
/// to stop waiting for the INVITE's 487.
type PendingCancel = (Message, Option<Instant>, Duration, Instant);

/// What a call abandoned before it was answered reports.
const ABANDONED: CallOutcome = CallOutcome::Abandoned { answered: false };

/// How the INVITE transaction ended.
enum InviteResult {
    Answered(Message),
    Final(Message),
    /// No final response (Timer B, or nothing after CANCEL); the outcome to report.
    Over(CallOutcome),
}

struct CallState<'a> {
    config: &'a TrunkConfig,
    transport: Transport,
    local: SocketAddr,
    call_id: String,
    /// Our `From`, tag included.
    from: String,
    /// The `To` of out-of-dialog requests (no tag).
    to: String,
    request_uri: String,
    contact: String,
    cseq: u32,
    timeline: Timeline,
    on_progress: &'a mut (dyn FnMut(Progress) + Send),
    offer: String,
    /// ACKs already sent for non-2xx finals, by INVITE branch, to answer retransmissions.
    acks: Vec<(String, Message)>,
    /// Completes when the caller no longer wants the call ([`SipClient::call_until`]).
    abandon: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    /// `abandon` completed (it is not polled again).
    abandoned: bool,
}

impl CallState<'_> {
    async fn run(&mut self, rtp: &UdpSocket, audio: &[i16]) -> (CallOutcome, Option<sdp::Answer>) {
        let mut authorization: Option<(&'static str, String)> = None;
        let mut challenged_by: Option<Challenge> = None;
        let answer = loop {
            self.cseq += 1;
            let branch = new_branch();
            let mut invite = self.request(Method::Invite, &self.request_uri.clone(), &branch);
            invite.push_header("To", self.to.clone());
            invite.push_header("Contact", self.contact.clone());
            invite.push_header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS");
            if let Some((name, value)) = &authorization {
                invite.push_header(name, value.clone());
            }
            let invite = invite.with_body("application/sdp", self.offer.clone());
            let response = match self.invite_transaction(&invite, &branch).await {
                InviteResult::Answered(response) => break response,
                InviteResult::Over(_) if self.abandoned => return (ABANDONED, None),
                InviteResult::Over(outcome) => return (outcome, None),
                InviteResult::Final(response) => response,
            };
            let status = response.status().unwrap_or_default();
            let ack = ack_for_failure(&invite, &response);
            if let Err(e) = self.transport.send(&ack).await {
                return (unreachable(&e), None);
            }
            self.acks.push((branch, ack));
            if self.abandoned {
                return (ABANDONED, None);
            }
            if status != 401 && status != 407 {
                return (outcome_for_failure(&response), None);
            }
            let (challenge_header, answer_header) = if status == 401 {
                ("WWW-Authenticate", "Authorization")
            } else {
                ("Proxy-Authenticate", "Proxy-Authorization")
            };
            let Some(credentials) = &self.config.credentials else {
                return (CallOutcome::AuthFailed { status }, None);
            };
            let challenge = match response.header(challenge_header).map(Challenge::parse) {
                Some(Ok(c)) => c,
                Some(Err(error)) => {
                    tracing::warn!(%error, "cannot answer the trunk's challenge");
                    return (CallOutcome::AuthFailed { status }, None);
                }
                None => return (CallOutcome::AuthFailed { status }, None),
            };
            // A second challenge for the same realm means our answer was wrong, unless the
            // server only says the nonce went stale.
            if let Some(previous) = &challenged_by
                && previous.realm == challenge.realm
                && !challenge.stale
            {
                return (CallOutcome::AuthFailed { status }, None);
            }
            match challenge.respond(credentials, "INVITE", &self.request_uri, &new_cnonce(), 1) {
                Ok(value) => authorization = Some((answer_header, value)),
                Err(error) => {
                    tracing::warn!(%error, "cannot answer the trunk's challenge");
                    return (CallOutcome::AuthFailed { status }, None);
                }
            }
            challenged_by = Some(challenge);
        };
        self.timeline.answered = Some(SystemTime::now());
        let dialog = Dialog {
            to: answer.header("To").unwrap_or(&self.to).to_owned(),
            remote_target: answer
                .header("Contact")
                .map_or(self.request_uri.clone(), |c| uri_of(c).to_owned()),
            route: {
                let mut route: Vec<String> = answer
                    .header_all("Record-Route")
                    .flat_map(|v| v.split(','))
                    .map(|v| v.trim().to_owned())
                    .collect();
                route.reverse();
                route
            },
            invite_cseq: self.cseq,
        };
        let ack = self.in_dialog(Method::Ack, &dialog, dialog.invite_cseq);
        if let Err(e) = self.transport.send(&ack).await {
            return (unreachable(&e), None);
        }
        if self.abandoned {
            // The 200 crossed our CANCEL: the call is up, and nobody wants it.
            self.bye(&dialog).await;
            return (CallOutcome::Abandoned { answered: true }, None);
        }
        let media = sdp::parse_answer(&answer.body, &self.config.codecs);
        let media = match media {
            Ok(m) => m,
            Err(reason) => {
                self.bye(&dialog).await;
                return (CallOutcome::MediaFailed { reason }, None);
            }
        };
        (self.on_progress)(Progress::Answered { codec: media.codec });
        let outcome = self.play(rtp, audio, media, &dialog, &ack).await;
        (outcome, Some(media))
    }

    /// Sends the INVITE and waits for its final response: retransmitting on UDP (Timer A,
    /// doubling from T1) until a provisional response, giving up at Timer B (64×T1) if
    /// none came, and cancelling when the ring timeout passes.
    async fn invite_transaction(&mut self, invite: &Message, branch: &str) -> InviteResult {
        if let Err(e) = self.transport.send(invite).await {
            return InviteResult::Over(unreachable(&e));
        }
        (self.on_progress)(Progress::InviteSent);
        if self.timeline.invite_sent.is_none() {
            self.timeline.invite_sent = Some(SystemTime::now());
        }
        let t1 = self.config.t1;
        let start = Instant::now();
        let timer_b = start + 64 * t1;
        let ring_deadline = start + self.config.ring_timeout;
        let reliable = self.transport.kind() == TransportKind::Tcp;
        let mut retransmit_every = t1;
        let mut next_retransmit = (!reliable).then_some(start + t1);
        let mut provisional = false;
        // Once cancelled: the CANCEL, its next retransmission, and when to stop waiting.
        let mut cancel: Option<PendingCancel> = None;
        loop {
            // Until a provisional response we may not CANCEL (RFC 3261 9.1), so the ring
            // timeout only counts once the INVITE is proceeding; before that, Timer B.
            let mut deadline = if provisional { ring_deadline } else { timer_b };
            if let Some((_, retransmit, _, give_up)) = &cancel {
                deadline = retransmit.map_or(*give_up, |r| r.min(*give_up));
            } else if let Some(r) = next_retransmit {
                deadline = deadline.min(r);
            }
            let received = tokio::select! {
                r = timeout_at(deadline, self.transport.recv()) => match r {
                    Ok(Ok(m)) => Some(m),
                    Ok(Err(e)) => return InviteResult::Over(unreachable(&e)),
                    Err(_) => None,
                },
                () = &mut self.abandon, if !self.abandoned => {
                    self.abandoned = true;
                    // Until a provisional response we may not CANCEL; the first one
                    // below does.
                    if provisional && cancel.is_none() {
                        match self.cancel(invite).await {
                            Ok(c) => cancel = Some(c),
                            Err(e) => return InviteResult::Over(unreachable(&e)),
                        }
                    }
                    continue;
                }
            };
            let Some(message) = received else {
                let now = Instant::now();
                if let Some((request, retransmit, every, give_up)) = &mut cancel {
                    if now >= *give_up {
                        return InviteResult::Over(CallOutcome::NoAnswer { status: None });
                    }
                    if let Some(at) = retransmit
                        && now >= *at
                    {
                        if let Err(e) = self.transport.send(request).await {
                            return InviteResult::Over(unreachable(&e));
                        }
                        *every = (*every * 2).min(T2);
                        *at = now + *every;
                    }
                    continue;
                }
                if !provisional && now >= timer_b {
                    return InviteResult::Over(CallOutcome::Unreachable {
                        reason: format!("no response to INVITE within {:?}", 64 * t1),
                    });
                }
                if provisional && now >= ring_deadline {
                    match self.cancel(invite).await {
                        Ok(c) => cancel = Some(c),
                        Err(e) => return InviteResult::Over(unreachable(&e)),
                    }
                    continue;
                }
                if let Some(at) = &mut next_retransmit
                    && now >= *at
                {
                    if let Err(e) = self.transport.send(invite).await {
                        return InviteResult::Over(unreachable(&e));
                    }
                    retransmit_every *= 2;
                    *at = now + retransmit_every;
                }
                continue;
            };
            if message.method().is_some() {
                self.answer_stray_request(&message).await;
                continue;
            }
            let cseq = message.cseq();
            let ours = message.top_via_branch() == Some(branch)
                && message.call_id() == Some(&self.call_id);
            match cseq {
                Some((_, Method::Cancel)) if ours => {
                    // The CANCEL was answered: stop retransmitting it, keep waiting for
                    // the INVITE's 487.
                    if let Some((_, retransmit, _, _)) = &mut cancel
                        && message.status().is_some_and(|s| s >= 200)
                    {
                        *retransmit = None;
                    }
                }
                Some((n, Method::Invite)) if ours && n == self.cseq => {
                    let status = message.status().unwrap_or_default();
                    if status < 200 {
                        provisional = true;
                        next_retransmit = None;
                        if (status == 180 || status == 183) && self.timeline.ringing.is_none() {
                            self.timeline.ringing = Some(SystemTime::now());
                            (self.on_progress)(Progress::Ringing { status });
                        }
                        if self.abandoned && cancel.is_none() {
                            match self.cancel(invite).await {
                                Ok(c) => cancel = Some(c),
                                Err(e) => return InviteResult::Over(unreachable(&e)),
                            }
                        }
                    } else if status < 300 {
                        return InviteResult::Answered(message);
                    } else if cancel.is_some() && status == 487 {
                        let ack = ack_for_failure(invite, &message);
                        if let Err(e) = self.transport.send(&ack).await {
                            return InviteResult::Over(unreachable(&e));
                        }
                        self.acks.push((branch.to_owned(), ack));
                        return InviteResult::Over(CallOutcome::NoAnswer { status: Some(487) });
                    } else {
                        return InviteResult::Final(message);
                    }
                }
                _ => self.answer_stray_response(&message).await,
            }
        }
    }

    /// Sends the CANCEL for a proceeding `invite`; returns it with its retransmission
    /// timer (UDP only), the current interval and when to stop waiting for the 487.
    async fn cancel(&mut self, invite: &Message) -> io::Result<PendingCancel> {
        let request = cancel_for(invite);
        self.transport.send(&request).await?;
        let (now, t1) = (Instant::now(), self.config.t1);
        let reliable = self.transport.kind() == TransportKind::Tcp;
        Ok((request, (!reliable).then_some(now + t1), t1, now + 64 * t1))
    }

    /// Plays the audio until it ends, the callee hangs up, or the maximum length passes;
    /// then hangs up ourselves if the callee did not.
    async fn play(
        &mut self,
        rtp: &UdpSocket,
        audio: &[i16],
        media: sdp::Answer,
        dialog: &Dialog,
        ack: &Message,
    ) -> CallOutcome {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sender = send_paced(rtp, media.destination, media.codec, audio, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(sender);
        let max_end = Instant::now() + self.config.max_duration;
        // While the audio plays, `report` is None; once it has ended, the call lingers
        // until `hangup_at` so the callee hears the last packets.
        let mut report = None;
        let mut hangup_at: Option<Instant> = None;
        let hangup = loop {
            let deadline = hangup_at.map_or(max_end, |h| h.min(max_end));
            tokio::select! {
                done = &mut sender, if report.is_none() => {
                    report = Some(done);
                    hangup_at = Some(Instant::now() + self.config.hangup_delay);
                }
                () = sleep_until(deadline) => {
                    break if report.is_some() { Hangup::AudioEnded } else { Hangup::MaxDuration };
                }
                received = self.transport.recv() => match received {
                    Err(error) => {
                        tracing::debug!(%error, "SIP transport lost mid-call");
                        break Hangup::ConnectionLost;
                    }
                    Ok(message) => {
                        if self.handle_mid_call(&message, ack).await {
                            break Hangup::Callee;
                        }
                    }
                }
            }
        };
        let _ = stop_tx.send(());
        let report = match report {
            Some(r) => r,
            None => sender.await,
        };
        if matches!(hangup, Hangup::AudioEnded | Hangup::MaxDuration) {
            self.bye(dialog).await;
        }
        CallOutcome::Answered {
            played: report.played,
            completed: report.completed,
            hangup,
        }
    }

    /// A message during the call. Returns true when it was the callee's BYE.
    async fn handle_mid_call(&mut self, message: &Message, ack: &Message) -> bool {
        match message.method() {
            Some(Method::Bye) if message.call_id() == Some(&self.call_id) => {
                self.respond(message, 200, "OK").await;
                true
            }
            Some(_) => {
                self.answer_stray_request(message).await;
                false
            }
            None => {
                // The 200 OK again: our ACK was lost.
                if message.status().is_some_and(|s| (200..300).contains(&s))
                    && matches!(message.cseq(), Some((_, Method::Invite)))
                    && message.call_id() == Some(&self.call_id)
                {
                    let _ = self.transport.send(ack).await;
                } else {
                    self.answer_stray_response(message).await;
                }
                false
            }
        }
    }

    /// Sends BYE and waits for its final response, retransmitting on UDP (Timer E, doubling
    /// from T1 up to T2) and giving up after Timer F (64×T1). A BYE from the callee that
    /// crosses ours is answered.
    async fn bye(&mut self, dialog: &Dialog) {
        self.cseq += 1;
        let bye = self.in_dialog(Method::Bye, dialog, self.cseq);
        let branch = bye.top_via_branch().unwrap_or_default().to_owned();
        if self.transport.send(&bye).await.is_err() {
            return;
        }
        let t1 = self.config.t1;
        let give_up = Instant::now() + 64 * t1;
        let reliable = self.transport.kind() == TransportKind::Tcp;
        let mut every = t1;
        let mut next = Instant::now() + t1;
        loop {
            let deadline = if reliable { give_up } else { next.min(give_up) };
            match timeout_at(deadline, self.transport.recv()).await {
                Ok(Ok(m)) if m.method() == Some(&Method::Bye) => {
                    self.respond(&m, 200, "OK").await;
                }
                Ok(Ok(m)) if m.method().is_some() => self.answer_stray_request(&m).await,
                Ok(Ok(m)) => {
                    if m.top_via_branch() == Some(branch.as_str())
                        && m.status().is_some_and(|s| s >= 200)
                    {
                        return;
                    }
                }
                Ok(Err(_)) => return,
                Err(_) => {
                    let now = Instant::now();
                    if now >= give_up {
                        tracing::debug!(call_id = %self.call_id, "BYE not answered");
                        return;
                    }
                    if self.transport.send(&bye).await.is_err() {
                        return;
                    }
                    every = (every * 2).min(T2);
                    next = now + every;
                }
            }
        }
    }

    /// Requests outside the dialog's flow: OPTIONS and the like get 200, a re-INVITE 488
    /// (we keep the session as negotiated), anything for another Call-ID 481.
    async fn answer_stray_request(&mut self, request: &Message) {
        let (status, reason) = if request.call_id() != Some(&self.call_id) {
            (481, "Call/Transaction Does Not Exist")
        } else {
            match request.method() {
                Some(Method::Ack) => return,
                Some(Method::Invite) => (488, "Not Acceptable Here"),
                Some(Method::Bye) => (481, "Call/Transaction Does Not Exist"),
                _ => (200, "OK"),
            }
        };
        if request.method() != Some(&Method::Ack) {
            self.respond(request, status, reason).await;
        }
    }

    /// A retransmitted non-2xx final for an earlier INVITE gets its ACK again.
    async fn answer_stray_response(&mut self, response: &Message) {
        let Some(branch) = response.top_via_branch() else {
            return;
        };
        if response.status().is_some_and(|s| s >= 300)
            && let Some((_, ack)) = self.acks.iter().find(|(b, _)| b == branch)
        {
            let ack = ack.clone();
            let _ = self.transport.send(&ack).await;
        }
    }

    async fn respond(&mut self, request: &Message, status: u16, reason: &str) {
        let mut response = Message::response(status, reason);
        for via in request.header_all("Via") {
            response.push_header("Via", via);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(value) = request.header(name) {
                response.push_header(name, value);
            }
        }
        if let Err(error) = self.transport.send(&response).await {
            tracing::debug!(%error, "could not answer a request");
        }
    }

    /// A request with our Via, From, Call-ID, CSeq and Max-Forwards; the caller adds To.
    fn request(&self, method: Method, uri: &str, branch: &str) -> Message {
        let cseq = format!("{} {method}", self.cseq);
        Message::request(method, uri)
            .with_header("Via", self.via(branch))
            .with_header("Max-Forwards", "70")
            .with_header("From", self.from.clone())
            .with_header("Call-ID", self.call_id.clone())
            .with_header("CSeq", cseq)
            .with_header("User-Agent", self.config.user_agent.clone())
    }

    fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.transport.kind().via_token(),
            host_port(self.local)
        )
    }

    fn in_dialog(&self, method: Method, dialog: &Dialog, cseq: u32) -> Message {
        let mut m = Message::request(method.clone(), dialog.remote_target.clone())
            .with_header("Via", self.via(&new_branch()))
            .with_header("Max-Forwards", "70")
            .with_header("From", self.from.clone())
            .with_header("To", dialog.to.clone())
            .with_header("Call-ID", self.call_id.clone())
            .with_header("CSeq", format!("{cseq} {method}"));
        for route in &dialog.route {
            m.push_header("Route", route.clone());
        }
        m
    }
}

/// RFC 3261 T2: the cap on non-INVITE retransmission intervals.
const T2: Duration = Duration::from_secs(4);

/// The ACK for a non-2xx final response (RFC 3261 17.1.1.3): the INVITE's Request-URI,
/// top Via, From, Call-ID and Route; the response's To; CSeq number with method ACK.
/// Whether `future` is complete at once (polled once, without waking anyone).
fn is_ready_now(future: Pin<&mut (impl Future<Output = ()> + ?Sized)>) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.poll(&mut cx).is_ready()
}

fn ack_for_failure(invite: &Message, response: &Message) -> Message {
    hop_by_hop(invite, Method::Ack, response.header("To"))
}

/// The CANCEL for an INVITE (RFC 3261 9.1): the same fields as the INVITE's, CSeq CANCEL.
fn cancel_for(invite: &Message) -> Message {
    hop_by_hop(invite, Method::Cancel, None)
}

fn hop_by_hop(invite: &Message, method: Method, to: Option<&str>) -> Message {
    let uri = match &invite.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => String::new(),
    };
    let number = invite.cseq().map_or(1, |(n, _)| n);
    let mut m = Message::request(method.clone(), uri);
    if let Some(via) = invite.header("Via") {
        m.push_header("Via", via);
    }
    m.push_header("Max-Forwards", "70");
    for name in ["From", "Call-ID"] {
        if let Some(v) = invite.header(name) {
            m.push_header(name, v);
        }
    }
    if let Some(to) = to.or_else(|| invite.header("To")) {
        m.push_header("To", to);
    }
    m.push_header("CSeq", format!("{number} {method}"));
    for route in invite.header_all("Route") {
        m.push_header("Route", route);
    }
    m
}

fn outcome_for_failure(response: &Message) -> CallOutcome {
    let status = response.status().unwrap_or_default();
    match status {
        486 | 600 => CallOutcome::Busy { status },
        603 => CallOutcome::Declined,
        408 | 480 | 487 => CallOutcome::NoAnswer {
            status: Some(status),
        },
        _ => CallOutcome::Rejected {
            status,
            reason: match &response.start {
                StartLine::Response { reason, .. } => reason.clone(),
                StartLine::Request { .. } => String::new(),
            },
        },
    }
}

fn unreachable(error: &io::Error) -> CallOutcome {
    CallOutcome::Unreachable {
        reason: error.to_string(),
    }
}

fn new_branch() -> String {
    format!("z9hG4bK{}", random_token())
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::param;

    fn tag(value: &str) -> Option<&str> {
        param(value, "tag")
    }

    #[test]
    fn uris_and_caller_ids_are_checked() {
        assert!(SipUri::parse("sip:9779800000000@trunk.example:5060;user=phone").is_ok());
        assert!(SipUri::parse("sip:127.0.0.1").is_ok());
        for bad in [
            "tel:123",
            "sip:",
            "sip:a@",
            "sip:a b@h",
            "sip:<a>@h",
            "sip:a@:5060",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
        assert!(SipUri::from_parts("a@b", "h").is_err());
        assert_eq!(
            SipUri::from_parts("9779800000000", "127.0.0.1:5070")
                .unwrap()
                .as_str(),
            "sip:9779800000000@127.0.0.1:5070"
        );
        assert!(CallerId::new("+9771", Some("Otp Gate")).is_ok());
        assert!(CallerId::new("a b", None).is_err());
        assert!(CallerId::new("x", Some("say \"hi\"")).is_err());
        assert!(CallerId::new("x", Some("line\r\nVia: x")).is_err());
    }

    #[test]
    fn acks_for_failures_and_cancels_copy_the_invite() {
        let invite = Message::request(Method::Invite, "sip:b@h")
            .with_header("Via", "SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKa;rport")
            .with_header("From", "<sip:a@h>;tag=1")
            .with_header("To", "<sip:b@h>")
            .with_header("Call-ID", "c1")
            .with_header("CSeq", "2 INVITE")
            .with_header("Route", "<sip:p;lr>")
            .with_body("application/sdp", "v=0\r\n");
        let busy = Message::response(486, "Busy Here")
            .with_header("Via", "SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKa;rport")
            .with_header("To", "<sip:b@h>;tag=9");
        let ack = ack_for_failure(&invite, &busy);
        assert_eq!(
            String::from_utf8(ack.to_bytes()).unwrap(),
            "ACK sip:b@h SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKa;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:a@h>;tag=1\r\n\
             Call-ID: c1\r\n\
             To: <sip:b@h>;tag=9\r\n\
             CSeq: 2 ACK\r\n\
             Route: <sip:p;lr>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let cancel = cancel_for(&invite);
        assert_eq!(cancel.cseq(), Some((2, Method::Cancel)));
        assert_eq!(cancel.top_via_branch(), Some("z9hG4bKa"));
        assert_eq!(tag(cancel.header("To").unwrap()), None);
        assert!(cancel.body.is_empty());
    }

    #[test]
    fn failure_statuses_map_to_outcomes() {
        let outcome = |s| outcome_for_failure(&Message::response(s, "Reason"));
        assert_eq!(outcome(486), CallOutcome::Busy { status: 486 });
        assert_eq!(outcome(600), CallOutcome::Busy { status: 600 });
        assert_eq!(outcome(603), CallOutcome::Declined);
        assert_eq!(outcome(480), CallOutcome::NoAnswer { status: Some(480) });
        assert_eq!(
            outcome(404),
            CallOutcome::Rejected {
                status: 404,
                reason: "Reason".into()
            }
        );
    }

    #[test]
    fn client_rejects_unworkable_settings() {
        let base = TrunkConfig::new(
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "127.0.0.1",
        );
        assert!(SipClient::new(base.clone()).is_ok());
        let no_codecs = TrunkConfig {
            codecs: vec![],
            ..base.clone()
        };
        assert_eq!(
            SipClient::new(no_codecs).unwrap_err(),
            ConfigError::Invalid("no codecs")
        );
        let bad_domain = TrunkConfig {
            domain: "a b".into(),
            ..base
        };
        assert!(matches!(
            SipClient::new(bad_domain),
            Err(ConfigError::BadDomain(_))
        ));
    }
}
