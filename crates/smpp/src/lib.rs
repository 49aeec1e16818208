//! SMPP 3.4 for an ESME: a codec that mirrors the specification and a
//! session client built on it. Nothing here knows what the messages mean.
//!
//! # Modules
//!
//! - [`pdu`]: the wire format. [`pdu::Pdu`] is a header's sequence number and
//!   status plus a [`pdu::Body`] per command (bind_*, unbind, enquire_link,
//!   submit_sm, deliver_sm, generic_nack, outbind and their responses);
//!   [`pdu::Tlv`] carries optional parameters. Every encoder has its decoder;
//!   [`pdu::decode_frame`] answers `Ok(None)` on partial input and rejects a
//!   command_length under 16 or over [`pdu::MAX_PDU_LEN`] with a named
//!   [`ProtocolError`].
//! - [`receipt`]: delivery receipts in the text form and the TLV form, the
//!   [`receipt::MessageState`] they report, and [`receipt::ids`]: the one rule
//!   that ties a receipt's id to a submission whichever way the SMSC spells it
//!   (padded hex in submit_sm_resp, padded decimal in the receipt, ...), with
//!   a route's habit configured or learned.
//! - [`concat`]: already-split, already-encoded parts of a long message into
//!   submit_sm PDUs (UDH, SAR TLVs, or one message_payload).
//! - [`client`]: [`Client`], a cheap `Clone` handle over the tasks that own
//!   one bound connection; [`Inbound`] is what the SMSC sends us.
//! - [`Backoff`]: exponential delays for a caller that reconnects.
//! - [`tls`] (feature `tls`, on by default): SMPP over TLS with rustls,
//!   trusting public roots, a CA file or one pinned certificate;
//!   [`Client::connect_tls`].
//!
//! # Tracing
//!
//! With [`BindConfig::pdu_trace`] set, the session logs every PDU it sends
//! and receives at debug level under the target `smpp::pdu`, written by
//! [`pdu::Redacted`]: every field but the bind password and the message
//! octets (short_message and message_payload show as lengths). Validity
//! periods are written by [`pdu::relative_time`].
//!
//! # Window and TPS
//!
//! A bind allows `window` (default 10) submit_sm without a response at once:
//! [`Client::submit`] takes a slot before sending and gives it back when the
//! response arrives or `response_timeout` (default 10 s) passes. With
//! `tps: Some(n)` the submits are also spaced 1/n s apart. Throughput per
//! bind is roughly `window / round-trip time`, capped by `tps`; several
//! binds (several `Client`s) add up.
//!
//! # What this crate does, and what the caller must
//!
//! Ours: binding, sequence numbers, matching responses, the window, the TPS
//! spacing, response timeouts, enquire_link both ways, acknowledging every
//! deliver_sm (ESME_ROK) before handing it over, answering unknown requests
//! with generic_nack, clean unbind, failing everything pending with
//! [`Error::ConnectionClosed`] when the connection ends.
//!
//! The caller's: splitting text and choosing data_coding; deciding what a
//! submit_sm_resp status means (ESME_RTHROTTLED and ESME_RMSGQFUL ask to slow
//! down and retry: [`SubmitResponse::is_throttled`]); retrying; noticing
//! [`Client::closed`] and reconnecting with backoff; persisting what must
//! survive a crash (a receipt is acknowledged to the SMSC before the caller
//! sees it).
//!
//! # Tests
//!
//! Byte vectors, receipts and concatenation are tested in `tests/`; the
//! client against a scripted SMSC over `tokio::io::duplex` in
//! `tests/client.rs`, and against a real one (node-smpp, driven by
//! `peers/smsc/smsc.js`) in `tests/node_smpp.rs`, which fails until
//! `peers/smsc/install.sh` has been run. `fuzz/` holds cargo-fuzz targets for
//! [`pdu::decode_frame`] and [`receipt::parse_text`] (`fuzz/run.sh`).
//!
//! ```no_run
//! # async fn run() -> Result<(), smpp::Error> {
//! use smpp::{BindConfig, Client, Inbound, pdu::SubmitSm};
//!
//! let (client, mut inbound) = Client::connect("127.0.0.1:2775", BindConfig::new("esme", "secret")).await?;
//! let sm = SubmitSm::new("MyBrand", "9779841000000", smpp::pdu::data_coding::SMSC_DEFAULT, &b"Hello"[..]);
//! let resp = client.submit(&sm).await?;
//! if resp.is_ok() {
//!     while let Some(Inbound::Receipt { receipt, .. }) = inbound.recv().await {
//!         if smpp::receipt::ids_match(receipt.message_id.as_deref().unwrap_or(""), &resp.message_id) {
//!             break;
//!         }
//!     }
//! }
//! client.unbind().await
//! # }
//! ```

mod backoff;
pub mod client;
pub mod concat;
mod error;
pub mod pdu;
mod quickack;
pub mod receipt;
#[cfg(feature = "tls")]
pub mod tls;

pub use backoff::Backoff;
pub use client::{BindConfig, BindMode, Client, Inbound, Password, SubmitResponse};
pub use error::{Error, ProtocolError};
