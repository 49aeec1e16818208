//! A small SIP user agent client: it places one call through a trunk, plays 8 kHz audio
//! over RTP with G.711 once the callee answers, and hangs up. It knows nothing of what
//! the audio says.
//!
//! # Modules
//! - [`message`]: SIP requests and responses, parser paired with formatter, stream framing.
//! - [`digest`]: HTTP Digest answers to 401/407 challenges; [`digest::Password`] hides itself.
//! - [`sdp`]: our audio offer and the parts of an answer we use.
//! - [`media`]: G.711 µ-law/A-law, RTP packets, a sender paced at one packet per 20 ms.
//! - [`call`]: [`SipClient`], which runs a whole call and returns a [`CallReport`].
//!
//! # Using it
//! ```no_run
//! # async fn demo(samples: &[i16]) -> Result<(), Box<dyn std::error::Error>> {
//! use sip::{CallerId, SipClient, SipUri, TrunkConfig};
//! let config = TrunkConfig::new("127.0.0.1:5060".parse()?, "127.0.0.1".parse()?, "127.0.0.1");
//! let client = SipClient::new(config)?; // once; clone it freely
//! let to = SipUri::from_parts("9779800000000", "127.0.0.1:5060")?;
//! let caller = CallerId::new("9779700000000", Some("otpgate"))?;
//! let report = client.call(&to, &caller, samples).await?;
//! println!("{:?} at {:?}", report.outcome, report.timeline);
//! # Ok(()) }
//! ```
//! The caller owns three things: the audio (8 kHz mono `i16`, which is what `tts::Audio`
//! holds), a limit on concurrent calls (each call binds its own SIP and RTP sockets, so
//! calls are independent, but a trunk has a channel limit), and the retry policy for the
//! outcomes that deserve one ([`CallOutcome::Busy`], [`CallOutcome::NoAnswer`],
//! [`CallOutcome::Unreachable`]).
//!
//! # Call flow
//! 1. Bind an RTP socket and a SIP socket (UDP, connected to the trunk) or TCP connection
//!    on [`TrunkConfig::local_ip`]. Every request goes to [`TrunkConfig::proxy`]; the
//!    Request-URI is the callee's URI.
//! 2. INVITE with an SDP offer of PCMU and PCMA. 100 stops retransmission; 180/183 set
//!    [`Timeline::ringing`]. A 401 or 407 is ACKed and answered once with a new INVITE
//!    (same Call-ID and From tag, CSeq + 1) carrying `Authorization` or
//!    `Proxy-Authorization`; a second challenge for the same realm, unless marked stale,
//!    is [`CallOutcome::AuthFailed`].
//! 3. When [`TrunkConfig::ring_timeout`] passes after a provisional response, CANCEL; the
//!    487 that follows is ACKed and the call is [`CallOutcome::NoAnswer`]. Every non-2xx
//!    final response is ACKed in the INVITE's transaction (RFC 3261 17.1.1.3) and the ACK
//!    is re-sent if the response is retransmitted.
//!    [`SipClient::call_until`] also takes a future that says the caller no longer wants
//!    the call (the gateway: the code was verified meanwhile). If it is already complete
//!    nothing is sent; if it completes while the INVITE rings, CANCEL goes out at once
//!    (before a provisional response, as soon as one arrives: RFC 3261 9.1); a 200 that
//!    crosses that CANCEL is ACKed and hung up with BYE. Either way the call is
//!    [`CallOutcome::Abandoned`]. Once the audio plays, it is no longer watched.
//! 4. On 200 OK: ACK it (and again for each retransmitted 200), take the codec and RTP
//!    address from the SDP answer, and send the audio paced in real time. The callee's
//!    BYE is answered with 200 and stops the audio ([`Hangup::Callee`]).
//! 5. When the audio ends, wait [`TrunkConfig::hangup_delay`] so the callee's jitter
//!    buffer plays the last packets, then BYE. [`TrunkConfig::max_duration`] cuts the audio
//!    short with a BYE. The BYE's response is waited for, but the outcome does not depend
//!    on it.
//!
//! # Transports and timers
//! UDP is the default. The socket is connected to the trunk, so an ICMP "port unreachable"
//! ends the call at once as [`CallOutcome::Unreachable`] instead of after Timer B. On UDP,
//! the INVITE is retransmitted at T1, 2·T1, 4·T1, ... (Timer A) until a response, and
//! given up at 64·T1 (Timer B, 32 s by default) as unreachable; CANCEL and BYE are
//! retransmitted at T1 doubling up to T2 = 4 s (Timer E) and given up at 64·T1 (Timer F).
//! TCP (`;transport=tcp` in Contact) sends each request once over one connection per call
//! and expects the callee's requests (its BYE) on the same connection, which is how
//! trunks and proxies behave; Timer B still bounds the wait for a first response.
//! We do not linger after the call (Timer D/K): once our ACK or BYE is answered the
//! sockets close, and a peer whose last retransmission then finds a closed port stops on
//! its own timer.
//!
//! Not done, on purpose: following 3xx redirects (reported as [`CallOutcome::Rejected`]),
//! re-INVITEs from the callee (answered 488; the session stays as negotiated), RTCP
//! (prompts last seconds; RFC 3550 receivers cope), receiving RTP (the callee's audio is
//! left unread), TLS/SRTP, DNS (the trunk is a socket address).
//!
//! # Tests
//! Unit tests sit beside each codec (G.711 against the G.711 tables, RTP header bytes,
//! SDP, SIP parse/format round trips, the RFC 2617 and RFC 7616 digest examples). The
//! integration tests in `tests/calls/` run against real peers on 127.0.0.1 and fail, never
//! skip, when a program is missing; they need the Debian packages `baresip-core` (the
//! callee that records what it hears), `sip-tester` (sipp, scenarios in
//! `tests/scenarios/`) and `espeak-ng` (the Nepali prompt, through the `tts` crate):
//!
//! ```text
//! apt-get install -y baresip-core sip-tester espeak-ng
//! ```
//!
//! The key test plays a rendered Nepali prompt to baresip and checks by normalised
//! cross-correlation that the recording is that prompt, with the same duration. The whole
//! suite takes about 10 s (`time cargo test -p sip`, built, on a 2-core box shared with
//! other builds).
//!
//! # Why our own UAC
//! The issue allowed a maintained crate. `rsipstack` (0.7, `cargo info rsipstack`) is a
//! full stack: transaction and dialog layers, registrar, TLS, WebSocket, DNS SRV, with a
//! default feature set pulling in rustls, hickory-resolver and tungstenite, and an API that
//! still changes between 0.x releases; `ezk-sip-ua` (0.9) is similar in scope and comes
//! with its own media stack. Neither does RTP pacing or G.711 for us, which is half of
//! this crate, and both would still need the same tests against baresip and sipp. What
//! we need is one outbound call shape, a few hundred lines of state machine whose every
//! timer and header is tested here against real peers, so we own it.

pub mod call;
pub mod digest;
pub mod media;
pub mod message;
pub mod sdp;
mod transport;

pub use call::{
    CallError, CallOutcome, CallReport, CallerId, ConfigError, Hangup, Progress, SipClient, SipUri,
    Timeline, TrunkConfig,
};
pub use digest::{Credentials, Password};
pub use media::Codec;
pub use sdp::Direction;
pub use transport::TransportKind;
