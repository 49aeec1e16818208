//! The ESME session: a cheap `Clone` handle over two background tasks.
//!
//! [`Client::connect`] (or [`Client::bind`] over any byte stream) binds, then
//! spawns a reader task and a writer task that own the connection:
//!
//! - the reader matches responses to waiting requests by sequence number,
//!   answers enquire_link and unbind from the SMSC, acknowledges every
//!   deliver_sm with deliver_sm_resp (ESME_ROK) *before* handing it to the
//!   [`Inbound`] channel, and sends its own enquire_link after
//!   `enquire_link_interval` without traffic (no answer within
//!   `response_timeout` closes the session);
//! - the writer drains queued frames and writes them in batches.
//!
//! [`Client::submit`] takes one of `window` slots (a semaphore), waits for
//! its TPS turn, sends, and waits at most `response_timeout` for the
//! submit_sm_resp. The slot is freed when the response arrives or the wait
//! times out, so at most `window` submit_sm are ever unanswered on the bind.
//!
//! When the connection ends, every waiting request fails with
//! [`Error::ConnectionClosed`], [`Client::is_closed`] turns true and
//! [`Client::closed`] resolves. Reconnecting (see [`crate::Backoff`]) and
//! retrying are the caller's decisions.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::error::Error;
pub use crate::pdu::BindMode;
use crate::pdu::{
    Bind, Body, CommandId, CommandStatus, DeliverSm, DeliverSmResp, FrameError, Pdu, Redacted,
    SubmitSm, decode_frame, encode_submit_sm, npi, ton,
};
use crate::receipt::{self, Receipt};

/// A password whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// The password itself, for the bind PDU.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<&str> for Password {
    fn from(value: &str) -> Self {
        Password::new(value)
    }
}

impl From<String> for Password {
    fn from(value: String) -> Self {
        Password(value)
    }
}

/// How to bind and how to behave once bound.
#[derive(Debug, Clone)]
pub struct BindConfig {
    /// The ESME's identity at the SMSC (at most 15 characters).
    pub system_id: String,
    /// The ESME's password (at most 8 characters).
    pub password: Password,
    /// system_type, often empty (at most 12 characters).
    pub system_type: String,
    /// Transceiver (default), transmitter or receiver.
    pub mode: BindMode,
    /// interface_version sent in the bind: 0x34.
    pub interface_version: u8,
    /// addr_ton of the bind (addresses served, for receivers).
    pub addr_ton: u8,
    /// addr_npi of the bind.
    pub addr_npi: u8,
    /// address_range of the bind, usually empty.
    pub address_range: String,
    /// Most submit_sm unanswered at once on this bind (default 10).
    pub window: usize,
    /// Most submit_sm sent per second on this bind; `None` for no limit.
    pub tps: Option<u32>,
    /// How long to wait for any response, including the bind's (default 10 s).
    pub response_timeout: Duration,
    /// Send enquire_link after this long without receiving anything (default 30 s).
    pub enquire_link_interval: Duration,
    /// Capacity of the [`Inbound`] channel; when full, the session stops
    /// reading from the SMSC until the caller catches up (default 1024).
    pub inbound_capacity: usize,
    /// `Some(label)`: log every PDU sent and received at debug level under
    /// the target `smpp::pdu`, with `bind = label`. The lines come from
    /// [`Redacted`]: no password, no message octets. `None` (the default):
    /// no trace.
    pub pdu_trace: Option<String>,
}

impl BindConfig {
    /// A transceiver bind with the defaults above.
    pub fn new(system_id: impl Into<String>, password: impl Into<Password>) -> Self {
        BindConfig {
            system_id: system_id.into(),
            password: password.into(),
            system_type: String::new(),
            mode: BindMode::Transceiver,
            interface_version: 0x34,
            addr_ton: ton::UNKNOWN,
            addr_npi: npi::UNKNOWN,
            address_range: String::new(),
            window: 10,
            tps: None,
            response_timeout: Duration::from_secs(10),
            enquire_link_interval: Duration::from_secs(30),
            inbound_capacity: 1024,
            pdu_trace: None,
        }
    }

    fn bind_body(&self) -> Body {
        let bind = Bind {
            system_id: self.system_id.clone(),
            password: self.password.expose().to_owned(),
            system_type: self.system_type.clone(),
            interface_version: self.interface_version,
            addr_ton: self.addr_ton,
            addr_npi: self.addr_npi,
            address_range: self.address_range.clone(),
        };
        match self.mode {
            BindMode::Transceiver => Body::BindTransceiver(bind),
            BindMode::Transmitter => Body::BindTransmitter(bind),
            BindMode::Receiver => Body::BindReceiver(bind),
        }
    }
}

/// What the SMSC sends us: every deliver_sm, already acknowledged.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A delivery receipt, parsed. `pdu` is the deliver_sm it came in.
    Receipt {
        /// What the receipt says.
        receipt: Receipt,
        /// The deliver_sm as received.
        pdu: Box<DeliverSm>,
    },
    /// A mobile-originated message, or a receipt that could not be parsed
    /// (its esm_class still says receipt; see [`DeliverSm::is_receipt`]).
    Message(Box<DeliverSm>),
}

/// The SMSC's answer to a submit_sm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitResponse {
    /// ESME_ROK when accepted; ESME_RTHROTTLED / ESME_RMSGQFUL mean "slow
    /// down and retry" ([`CommandStatus::is_throttling`]); anything else is a
    /// rejection the caller classifies.
    pub status: CommandStatus,
    /// The SMSC's id for the message (empty unless accepted); receipts refer
    /// to it, possibly spelled differently (see [`receipt::ids_match`]).
    pub message_id: String,
    /// The sequence number the submit_sm was sent with.
    pub sequence_number: u32,
}

impl SubmitResponse {
    /// True when the SMSC accepted the message.
    pub fn is_ok(&self) -> bool {
        self.status.is_ok()
    }

    /// True when the SMSC asked us to slow down.
    pub fn is_throttled(&self) -> bool {
        self.status.is_throttling()
    }
}

enum Outgoing {
    Frame(Bytes),
    /// Write what is queued, shut the write side down, stop.
    Shutdown,
}

type Waiter = oneshot::Sender<Result<Pdu, Error>>;

/// State shared by the handles and the two tasks.
struct Shared {
    mode: BindMode,
    window_size: usize,
    window: Arc<Semaphore>,
    /// Earliest instant the next submit_sm may go out, when a TPS limit is set.
    pacer: Option<(Duration, Mutex<Instant>)>,
    response_timeout: Duration,
    sequence: AtomicU32,
    // std Mutex: never held across .await. `None` once closed, so nothing
    // can register after the pending requests were failed.
    pending: Mutex<Option<HashMap<u32, Waiter>>>,
    out: mpsc::UnboundedSender<Outgoing>,
    closed: watch::Sender<bool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    smsc_system_id: String,
    /// The PDU trace's label, when the trace is on.
    trace: Option<String>,
}

/// One line of the PDU trace (see [`BindConfig::pdu_trace`]).
fn trace(label: Option<&str>, dir: &'static str, pdu: &Pdu) {
    trace_fields(
        label,
        dir,
        pdu.sequence_number,
        pdu.command_status,
        Redacted::body(&pdu.body),
    );
}

fn trace_fields(
    label: Option<&str>,
    dir: &'static str,
    sequence: u32,
    status: CommandStatus,
    pdu: Redacted<'_>,
) {
    if let Some(bind) = label {
        tracing::debug!(target: "smpp::pdu", bind, dir, sequence, status = %status, "{pdu}");
    }
}

impl Shared {
    fn next_sequence(&self) -> u32 {
        // Sequence numbers run 1..=0x7FFF_FFFF (SMPP 3.4 section 5.1.4).
        loop {
            let current = self.sequence.load(Ordering::Relaxed);
            let next = if current >= 0x7FFF_FFFF {
                1
            } else {
                current + 1
            };
            if self
                .sequence
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return current;
            }
        }
    }

    fn register(&self, sequence: u32) -> Result<oneshot::Receiver<Result<Pdu, Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending.lock().expect("pending lock poisoned");
        let map = pending.as_mut().ok_or(Error::ConnectionClosed)?;
        map.insert(sequence, tx);
        Ok(rx)
    }

    fn unregister(&self, sequence: u32) {
        if let Some(map) = self.pending.lock().expect("pending lock poisoned").as_mut() {
            map.remove(&sequence);
        }
    }

    fn complete(&self, sequence: u32, result: Result<Pdu, Error>) -> bool {
        let waiter = self
            .pending
            .lock()
            .expect("pending lock poisoned")
            .as_mut()
            .and_then(|map| map.remove(&sequence));
        match waiter {
            Some(tx) => {
                // The requester may have given up; nothing to do then.
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    fn send_frame(&self, frame: Bytes) -> Result<(), Error> {
        self.out
            .send(Outgoing::Frame(frame))
            .map_err(|_| Error::ConnectionClosed)
    }

    fn respond(&self, sequence: u32, status: CommandStatus, body: Body) {
        let pdu = Pdu::response(sequence, status, body);
        trace(self.trace.as_deref(), "out", &pdu);
        match pdu.to_bytes() {
            Ok(frame) => {
                let _ = self.send_frame(frame);
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a response"),
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Marks the session closed, fails waiting requests and asks the writer
    /// to flush and stop. Idempotent.
    fn close(&self, why: &str) {
        if self.closed.send_replace(true) {
            return;
        }
        tracing::debug!(reason = why, "SMPP session closed");
        self.window.close();
        let pending = self.pending.lock().expect("pending lock poisoned").take();
        for (_, waiter) in pending.into_iter().flatten() {
            let _ = waiter.send(Err(Error::ConnectionClosed));
        }
        let _ = self.out.send(Outgoing::Shutdown);
    }

    async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        // The sender lives in `self`, so wait_for only ends on `true`.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Waits for this submit_sm's TPS turn.
    async fn pace(&self) {
        if let Some((interval, next)) = &self.pacer {
            let slot = {
                let mut next = next.lock().expect("pacer lock poisoned");
                let slot = (*next).max(Instant::now());
                *next = slot + *interval;
                slot
            };
            sleep_until(slot).await;
        }
    }

    /// Sends a request that does not take a window slot and awaits its response.
    async fn request(&self, body: Body) -> Result<Pdu, Error> {
        let sequence = self.next_sequence();
        let pdu = Pdu::request(sequence, body);
        trace(self.trace.as_deref(), "out", &pdu);
        let frame = pdu.to_bytes()?;
        self.exchange(sequence, frame).await
    }

    async fn exchange(&self, sequence: u32, frame: Bytes) -> Result<Pdu, Error> {
        let rx = self.register(sequence)?;
        if let Err(e) = self.send_frame(frame) {
            self.unregister(sequence);
            return Err(e);
        }
        match timeout(self.response_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ConnectionClosed),
            Err(_) => {
                self.unregister(sequence);
                Err(Error::ResponseTimeout {
                    sequence,
                    after: self.response_timeout,
                })
            }
        }
    }
}

/// Closes the session when the last handle goes away.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close("every client handle was dropped");
    }
}

/// A bound SMPP session. Cloning is cheap; all clones drive the same bind.
/// Dropping the last clone closes the connection without unbind: call
/// [`Client::unbind`] for a clean end.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.handle.shared;
        f.debug_struct("Client")
            .field("mode", &shared.mode)
            .field("smsc_system_id", &shared.smsc_system_id)
            .field("window", &shared.window_size)
            .field("closed", &shared.is_closed())
            .finish()
    }
}

impl Client {
    /// Connects over TCP (connect bounded by `response_timeout`) and binds.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        config: BindConfig,
    ) -> Result<(Client, mpsc::Receiver<Inbound>), Error> {
        let stream = timeout(config.response_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the SMSC timed out",
                ))
            })??;
        stream.set_nodelay(true)?;
        Client::bind(crate::quickack::QuickAck(stream), config).await
    }

    /// Binds over an already-open byte stream (a TLS stream, or one end of
    /// `tokio::io::duplex` in tests) and starts the session tasks.
    ///
    /// Fails with [`Error::BindFailed`] when the SMSC refuses,
    /// [`Error::ResponseTimeout`] when it does not answer in time and
    /// [`Error::ConnectionClosed`] when it hangs up.
    pub async fn bind<S>(
        stream: S,
        config: BindConfig,
    ) -> Result<(Client, mpsc::Receiver<Inbound>), Error>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let bind_sequence = 1;
        let bind = Pdu::request(bind_sequence, config.bind_body());
        trace(config.pdu_trace.as_deref(), "out", &bind);
        let frame = bind.to_bytes()?;
        writer.write_all(&frame).await?;
        writer.flush().await?;

        let resp = timeout(
            config.response_timeout,
            await_bind_resp(&mut reader, &mut writer, &mut buf, bind_sequence),
        )
        .await
        .map_err(|_| Error::ResponseTimeout {
            sequence: bind_sequence,
            after: config.response_timeout,
        })??;
        trace(config.pdu_trace.as_deref(), "in", &resp);
        if !resp.command_status.is_ok() {
            return Err(Error::BindFailed {
                status: resp.command_status,
            });
        }
        let smsc_system_id = match resp.body {
            Body::BindTransceiverResp(r)
            | Body::BindTransmitterResp(r)
            | Body::BindReceiverResp(r) => r.system_id,
            other => {
                return Err(Error::UnexpectedResponse {
                    sequence: bind_sequence,
                    got: other.command_id(),
                });
            }
        };

        let window_size = config.window.max(1);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_capacity.max(1));
        let shared = Arc::new(Shared {
            mode: config.mode,
            window_size,
            window: Arc::new(Semaphore::new(window_size)),
            pacer: config
                .tps
                .filter(|&tps| tps > 0)
                .map(|tps| (Duration::from_secs(1) / tps, Mutex::new(Instant::now()))),
            response_timeout: config.response_timeout,
            sequence: AtomicU32::new(bind_sequence + 1),
            pending: Mutex::new(Some(HashMap::new())),
            out: out_tx,
            closed: watch::Sender::new(false),
            writer: Mutex::new(None),
            smsc_system_id,
            trace: config.pdu_trace,
        });
        let writer_task = tokio::spawn(write_loop(writer, out_rx, shared.clone()));
        *shared.writer.lock().expect("writer lock poisoned") = Some(writer_task);
        tokio::spawn(read_loop(
            reader,
            buf,
            shared.clone(),
            inbound_tx,
            config.enquire_link_interval,
        ));
        Ok((
            Client {
                handle: Arc::new(Handle { shared }),
            },
            inbound_rx,
        ))
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Sends a submit_sm and returns the SMSC's answer.
    ///
    /// Waits for a window slot, then for the TPS limit, then for the
    /// response (at most `response_timeout`, after which the slot is freed
    /// and [`Error::ResponseTimeout`] returned). Any submit_sm_resp is `Ok`,
    /// whatever its status: check [`SubmitResponse::is_ok`] and
    /// [`SubmitResponse::is_throttled`].
    pub async fn submit(&self, sm: &SubmitSm) -> Result<SubmitResponse, Error> {
        let shared = self.shared();
        if shared.mode == BindMode::Receiver {
            return Err(Error::WrongBindMode {
                operation: "submit_sm",
                mode: shared.mode,
            });
        }
        // Encode first: a message that breaks the spec takes no slot.
        let mut frame = BytesMut::new();
        encode_submit_sm(0, sm, &mut frame)?;

        let _slot = shared
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::ConnectionClosed)?;
        shared.pace().await;
        let sequence = shared.next_sequence();
        frame[12..16].copy_from_slice(&sequence.to_be_bytes());
        trace_fields(
            shared.trace.as_deref(),
            "out",
            sequence,
            CommandStatus::EsmeRok,
            Redacted::submit_sm(sm),
        );

        let pdu = shared.exchange(sequence, frame.freeze()).await?;
        match pdu.body {
            Body::SubmitSmResp(resp) => Ok(SubmitResponse {
                status: pdu.command_status,
                message_id: resp.message_id,
                sequence_number: sequence,
            }),
            Body::GenericNack => Err(Error::GenericNack {
                sequence,
                status: pdu.command_status,
            }),
            other => Err(Error::UnexpectedResponse {
                sequence,
                got: other.command_id(),
            }),
        }
    }

    /// Sends enquire_link and waits for the answer: a liveness probe.
    pub async fn enquire_link(&self) -> Result<(), Error> {
        let pdu = self.shared().request(Body::EnquireLink).await?;
        match pdu.body {
            Body::EnquireLinkResp => Ok(()),
            Body::GenericNack => Err(Error::GenericNack {
                sequence: pdu.sequence_number,
                status: pdu.command_status,
            }),
            other => Err(Error::UnexpectedResponse {
                sequence: pdu.sequence_number,
                got: other.command_id(),
            }),
        }
    }

    /// Ends the session cleanly: stops new submits, waits (at most
    /// `response_timeout`) for unanswered ones, sends unbind, waits for
    /// unbind_resp, and closes the connection. Already closed is fine.
    pub async fn unbind(&self) -> Result<(), Error> {
        let shared = self.shared();
        if shared.is_closed() {
            return Ok(());
        }
        // Holding every slot keeps new submits out while the last answers arrive.
        let drained = timeout(
            shared.response_timeout,
            shared.window.acquire_many(shared.window_size as u32),
        )
        .await;
        let result = match shared.request(Body::Unbind).await {
            Ok(_) | Err(Error::ConnectionClosed) => Ok(()),
            Err(e) => Err(e),
        };
        drop(drained);
        shared.close("unbound");
        let writer = shared.writer.lock().expect("writer lock poisoned").take();
        if let Some(writer) = writer {
            let _ = timeout(shared.response_timeout, writer).await;
        }
        result
    }

    /// True once the connection is gone; the handle will not recover.
    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        self.shared().wait_closed().await
    }

    /// submit_sm sent and not yet answered (or timed out), for metrics.
    pub fn window_in_use(&self) -> usize {
        let shared = self.shared();
        shared
            .window_size
            .saturating_sub(shared.window.available_permits())
    }

    /// The system_id the SMSC gave in its bind response.
    pub fn smsc_system_id(&self) -> &str {
        &self.shared().smsc_system_id
    }

    /// The bind mode.
    pub fn mode(&self) -> BindMode {
        self.shared().mode
    }
}

/// Reads until the bind response arrives, answering enquire_link meanwhile.
async fn await_bind_resp<R, W>(
    reader: &mut R,
    writer: &mut W,
    buf: &mut BytesMut,
    sequence: u32,
) -> Result<Pdu, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        while let Some(pdu) = decode_frame(buf)? {
            match pdu.body {
                Body::BindTransceiverResp(_)
                | Body::BindTransmitterResp(_)
                | Body::BindReceiverResp(_)
                    if pdu.sequence_number == sequence =>
                {
                    return Ok(pdu);
                }
                Body::GenericNack if pdu.sequence_number == sequence => {
                    return Err(Error::BindFailed {
                        status: pdu.command_status,
                    });
                }
                Body::EnquireLink => {
                    let resp = Pdu::response(
                        pdu.sequence_number,
                        CommandStatus::EsmeRok,
                        Body::EnquireLinkResp,
                    );
                    writer.write_all(&resp.to_bytes()?).await?;
                }
                other => {
                    tracing::debug!(command = %other.command_id(), "ignored before the bind response");
                }
            }
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(Error::ConnectionClosed);
        }
    }
}

async fn write_loop<W>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
) where
    W: AsyncWrite + Unpin,
{
    // Frames queued while a write is in progress go out together in one write.
    const BATCH: usize = 64 * 1024;
    let mut batch = BytesMut::with_capacity(BATCH);
    let mut stopping = false;
    while !stopping {
        match rx.recv().await {
            Some(Outgoing::Frame(frame)) => batch.put_slice(&frame),
            Some(Outgoing::Shutdown) | None => stopping = true,
        }
        // Let the tasks that were woken with this one queue their frames too:
        // one write of many PDUs costs far less than many writes of one.
        tokio::task::yield_now().await;
        while batch.len() < BATCH && !stopping {
            match rx.try_recv() {
                Ok(Outgoing::Frame(frame)) => batch.put_slice(&frame),
                Ok(Outgoing::Shutdown) => stopping = true,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        // A peer that stops reading for a whole response_timeout is dead.
        match timeout(shared.response_timeout, writer.write_all(&batch)).await {
            Ok(Ok(())) => batch.clear(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "writing to the SMSC failed");
                shared.close("write failed");
                return;
            }
            Err(_) => {
                tracing::warn!("the SMSC stopped reading");
                shared.close("write timed out");
                return;
            }
        }
    }
    let _ = timeout(shared.response_timeout, writer.shutdown()).await;
}

async fn read_loop<R>(
    mut reader: R,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    inbound: mpsc::Sender<Inbound>,
    enquire_link_interval: Duration,
) where
    R: AsyncRead + Unpin,
{
    let mut last_heard = Instant::now();
    // Set while our enquire_link waits for its answer: the deadline.
    let mut probe_deadline: Option<Instant> = None;
    loop {
        loop {
            match decode_frame(&mut buf) {
                Ok(Some(pdu)) => {
                    last_heard = Instant::now();
                    probe_deadline = None;
                    if !dispatch(pdu, &shared, &inbound).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(FrameError::InvalidPdu { header, source }) => {
                    last_heard = Instant::now();
                    tracing::warn!(command = %header.command_id, sequence = header.sequence_number, error = %source, "undecodable PDU");
                    let failed = Error::InvalidPdu { header, source };
                    if header.command_id.is_response() {
                        shared.complete(header.sequence_number, Err(failed));
                    } else {
                        shared.respond(
                            header.sequence_number,
                            CommandStatus::EsmeRinvcmdlen,
                            Body::GenericNack,
                        );
                    }
                }
                Err(e) => {
                    // The stream cannot be resynchronised after a bad length.
                    tracing::warn!(error = %e, "unframeable input from the SMSC");
                    let nack = CommandStatus::EsmeRinvcmdlen;
                    shared.respond(0, nack, Body::GenericNack);
                    shared.close("protocol error");
                    return;
                }
            }
        }

        let wake = probe_deadline.unwrap_or(last_heard + enquire_link_interval);
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => {
                    shared.close("the SMSC closed the connection");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading from the SMSC failed");
                    shared.close("read failed");
                    return;
                }
            },
            _ = sleep_until(wake) => {
                if probe_deadline.is_some() {
                    tracing::warn!("enquire_link unanswered: the link is dead");
                    shared.close("enquire_link unanswered");
                    return;
                }
                let sequence = shared.next_sequence();
                let probe = Pdu::request(sequence, Body::EnquireLink);
                trace(shared.trace.as_deref(), "out", &probe);
                match probe.to_bytes() {
                    Ok(frame) => { let _ = shared.send_frame(frame); }
                    Err(e) => tracing::error!(error = %e, "cannot encode enquire_link"),
                }
                probe_deadline = Some(Instant::now() + shared.response_timeout);
            }
            _ = shared.wait_closed() => return,
        }
    }
}

/// Handles one PDU from the SMSC; false when the session is over.
async fn dispatch(pdu: Pdu, shared: &Shared, inbound: &mpsc::Sender<Inbound>) -> bool {
    trace(shared.trace.as_deref(), "in", &pdu);
    let sequence = pdu.sequence_number;
    match pdu.body {
        Body::DeliverSm(deliver) => {
            shared.respond(
                sequence,
                CommandStatus::EsmeRok,
                Body::DeliverSmResp(DeliverSmResp::default()),
            );
            let item = classify(deliver);
            tokio::select! {
                sent = inbound.send(item) => {
                    if sent.is_err() {
                        tracing::debug!("inbound receiver dropped; deliver_sm acknowledged and discarded");
                    }
                }
                _ = shared.wait_closed() => return false,
            }
        }
        Body::EnquireLink => {
            shared.respond(sequence, CommandStatus::EsmeRok, Body::EnquireLinkResp);
        }
        Body::Unbind => {
            shared.respond(sequence, CommandStatus::EsmeRok, Body::UnbindResp);
            shared.close("the SMSC unbound");
            return false;
        }
        body if body.command_id().is_response() => {
            let command = body.command_id();
            let answered = shared.complete(sequence, Ok(Pdu { body, ..pdu }));
            // An unclaimed enquire_link_resp answers our keep-alive probe.
            if !answered && command != CommandId::EnquireLinkResp {
                tracing::debug!(%command, sequence, "response to no waiting request (timed out?)");
            }
        }
        other => {
            tracing::debug!(command = %other.command_id(), sequence, "unsupported request from the SMSC");
            shared.respond(sequence, CommandStatus::EsmeRinvcmdid, Body::GenericNack);
        }
    }
    true
}

fn classify(deliver: Box<DeliverSm>) -> Inbound {
    let looks_like_receipt = deliver.is_receipt()
        || deliver
            .tlv(crate::pdu::tlv::tag::RECEIPTED_MESSAGE_ID)
            .is_some();
    if looks_like_receipt {
        match receipt::from_deliver_sm(&deliver) {
            Ok(receipt) => {
                return Inbound::Receipt {
                    receipt,
                    pdu: deliver,
                };
            }
            Err(e) => tracing::warn!(error = %e, "unparseable delivery receipt"),
        }
    }
    Inbound::Message(deliver)
}
