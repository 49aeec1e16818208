//! One call's SIP connection to the trunk: a connected UDP socket or a TCP stream.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::message::{self, MAX_MESSAGE_LEN, Message};

/// How SIP messages travel to the trunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// UDP: every request is retransmitted until answered (RFC 3261 timers A, B, E, F).
    #[default]
    Udp,
    /// TCP: one connection per call, carrying the callee's requests back to us too.
    Tcp,
}

impl TransportKind {
    /// The token in `Via` (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        }
    }
}

pub(crate) enum Transport {
    // Connected, so only the trunk is heard and an ICMP "port unreachable" comes back as
    // ECONNREFUSED on the next receive instead of a silent 32 s wait.
    Udp(UdpSocket),
    Tcp { stream: TcpStream, buf: Vec<u8> },
}

impl Transport {
    pub(crate) async fn connect(
        kind: TransportKind,
        local_ip: IpAddr,
        peer: SocketAddr,
    ) -> io::Result<Transport> {
        match kind {
            TransportKind::Udp => {
                let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
                socket.connect(peer).await?;
                Ok(Transport::Udp(socket))
            }
            TransportKind::Tcp => {
                let socket = match local_ip {
                    IpAddr::V4(_) => TcpSocket::new_v4()?,
                    IpAddr::V6(_) => TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(local_ip, 0))?;
                let stream = socket.connect(peer).await?;
                stream.set_nodelay(true)?;
                Ok(Transport::Tcp {
                    stream,
                    buf: Vec::new(),
                })
            }
        }
    }

    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Transport::Udp(_) => TransportKind::Udp,
            Transport::Tcp { .. } => TransportKind::Tcp,
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Udp(s) => s.local_addr(),
            Transport::Tcp { stream, .. } => stream.local_addr(),
        }
    }

    pub(crate) async fn send(&mut self, message: &Message) -> io::Result<()> {
        let bytes = message.to_bytes();
        tracing::trace!(message = %message, "SIP send");
        match self {
            Transport::Udp(s) => s.send(&bytes).await.map(drop),
            Transport::Tcp { stream, .. } => stream.write_all(&bytes).await,
        }
    }

    /// The next message from the peer. Undecodable datagrams are logged and skipped; on
    /// TCP a framing error breaks the connection. Cancel-safe: a partial TCP read stays in
    /// the buffer.
    pub(crate) async fn recv(&mut self) -> io::Result<Message> {
        match self {
            Transport::Udp(socket) => {
                let mut buf = vec![0u8; MAX_MESSAGE_LEN];
                loop {
                    let n = socket.recv(&mut buf).await?;
                    let datagram = &buf[..n];
                    if datagram.iter().all(|b| b.is_ascii_whitespace()) {
                        continue; // keep-alive
                    }
                    match Message::parse(datagram) {
                        Ok(m) => {
                            tracing::trace!(message = %m, "SIP recv");
                            return Ok(m);
                        }
                        Err(error) => tracing::debug!(%error, "ignoring undecodable datagram"),
                    }
                }
            }
            Transport::Tcp { stream, buf } => loop {
                let skip = buf
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                buf.drain(..skip);
                match message::frame(buf) {
                    Ok(Some(len)) => {
                        let parsed = Message::parse(&buf[..len]);
                        buf.drain(..len);
                        return parsed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }
}
