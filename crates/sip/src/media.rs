//! Audio on the wire: G.711 codecs, RTP packets, and a sender paced in real time.
//!
//! Everything here works on 8 kHz mono 16-bit samples, the only rate G.711 knows. One RTP
//! packet carries [`SAMPLES_PER_PACKET`] samples (20 ms, the `ptime` our SDP offers).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::MissedTickBehavior;

/// Samples in one 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// Wall-clock length of one packet.
pub const PACKET_DURATION: Duration = Duration::from_millis(20);
/// Bytes of the fixed RTP header (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;

/// A G.711 codec, named as in the RTP/AVP profile (RFC 3551 table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// µ-law, static payload type 0.
    Pcmu,
    /// A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec with this static payload type, if it is one of ours.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The encoding name used in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Encodes one sample.
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => ulaw_encode(sample),
            Codec::Pcma => alaw_encode(sample),
        }
    }

    /// Decodes one byte.
    pub fn decode_sample(self, byte: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_decode(byte),
            Codec::Pcma => alaw_decode(byte),
        }
    }

    /// Encodes samples, one byte each.
    pub fn encode(self, samples: &[i16]) -> Vec<u8> {
        samples.iter().map(|s| self.encode_sample(*s)).collect()
    }

    /// Decodes bytes, one sample each.
    pub fn decode(self, bytes: &[u8]) -> Vec<i16> {
        bytes.iter().map(|b| self.decode_sample(*b)).collect()
    }

    /// The byte that decodes to (near) zero, used to pad the last packet.
    pub fn silence(self) -> u8 {
        self.encode_sample(0)
    }
}

// µ-law (G.711 section 2): the 14-bit magnitude plus a bias of 33 (132 at 16-bit scale)
// is coded as a 3-bit segment (the position of its leading one) and the 4 bits after it;
// the whole byte is sent inverted.
const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32_635;

/// G.711 µ-law encoding of a 16-bit linear sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    let value = i32::from(sample);
    let sign = if value < 0 { 0x80 } else { 0x00 };
    let magnitude = value.abs().min(ULAW_CLIP) + ULAW_BIAS;
    // magnitude is in 132..=32767, so its leading one sits at bit 7..=14.
    let segment = (31 - magnitude.leading_zeros()) as i32 - 7;
    let mantissa = (magnitude >> (segment + 3)) & 0x0F;
    !(sign | (segment << 4) | mantissa) as u8
}

/// G.711 µ-law decoding to a 16-bit linear sample (the middle of the quantisation step).
pub fn ulaw_decode(byte: u8) -> i16 {
    let code = !byte;
    let segment = i32::from((code >> 4) & 0x07);
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    if code & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// G.711 A-law encoding of a 16-bit linear sample (its top 13 bits are coded).
pub fn alaw_encode(sample: i16) -> u8 {
    let value = i32::from(sample) >> 3;
    // Negative values are coded from their ones' complement, so -1 and 0 share a step.
    let (sign, magnitude) = if value >= 0 {
        (0x80, value)
    } else {
        (0x00, -value - 1)
    };
    let (segment, mantissa) = if magnitude < 32 {
        (0, magnitude >> 1)
    } else {
        // magnitude is in 32..=4095: leading one at bit 5..=11 gives segment 1..=7.
        let segment = (31 - magnitude.leading_zeros()) as i32 - 4;
        (segment, (magnitude >> segment) & 0x0F)
    };
    ((sign | (segment << 4) | mantissa) ^ 0x55) as u8
}

/// G.711 A-law decoding to a 16-bit linear sample (the middle of the quantisation step).
pub fn alaw_decode(byte: u8) -> i16 {
    let code = byte ^ 0x55;
    let segment = i32::from((code >> 4) & 0x07);
    let mantissa = i32::from(code & 0x0F);
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    if code & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Builds RTP packets (RFC 3550 section 5.1) for one stream: version 2, no padding, no
/// extension, no CSRCs; the marker bit on the first packet (the start of a talkspurt).
#[derive(Clone, Debug)]
pub struct RtpPacketizer {
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    first: bool,
}

impl RtpPacketizer {
    /// A stream starting at the given sequence number and timestamp.
    pub fn new(payload_type: u8, ssrc: u32, sequence: u16, timestamp: u32) -> RtpPacketizer {
        RtpPacketizer {
            payload_type: payload_type & 0x7F,
            ssrc,
            sequence,
            timestamp,
            first: true,
        }
    }

    /// A stream with a random SSRC, first sequence number and first timestamp, as RFC 3550
    /// asks so that streams cannot be told apart or predicted by their numbering.
    pub fn random(payload_type: u8) -> RtpPacketizer {
        RtpPacketizer::new(payload_type, rand::random(), rand::random(), rand::random())
    }

    /// The synchronisation source identifier.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The timestamp the next packet will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The next packet around `payload`, which holds `samples` sampling instants (for
    /// G.711, one per byte). Sequence and timestamp then move on, wrapping.
    pub fn packet(&mut self, payload: &[u8], samples: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(RTP_HEADER_LEN + payload.len());
        out.push(0x80); // V=2, P=0, X=0, CC=0
        let marker = if self.first { 0x80 } else { 0x00 };
        out.push(marker | self.payload_type);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(payload);
        self.first = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        out
    }
}

/// Splits `samples` into 20 ms G.711 payloads; the last one is padded with silence so that
/// every packet is a whole 20 ms and the timestamps stay regular.
pub fn payloads(codec: Codec, samples: &[i16]) -> Vec<Vec<u8>> {
    samples
        .chunks(SAMPLES_PER_PACKET)
        .map(|chunk| {
            let mut payload = codec.encode(chunk);
            payload.resize(SAMPLES_PER_PACKET, codec.silence());
            payload
        })
        .collect()
}

/// What a paced send did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendReport {
    /// Packets handed to the socket.
    pub packets: u64,
    /// Audio sent: packets times 20 ms.
    pub played: Duration,
    /// Whether every packet was sent (false when stopped early).
    pub completed: bool,
}

/// Sends `samples` as RTP to `dest`, one 20 ms packet per 20 ms of wall-clock time, until
/// the audio ends or `stop` resolves.
///
/// The pacing uses a tokio interval with [`MissedTickBehavior::Burst`]: if the runtime
/// stalls (a busy box running 50 calls), the overdue packets go out at once and the stream
/// returns to its schedule, so arrival times stay tied to the RTP timestamps and a
/// receiver's jitter buffer absorbs the clump. `Delay` would instead push every later
/// packet late against its timestamp, which a receiver hears as a gap, and the call would
/// run longer than the audio.
///
/// Send errors are logged and the stream goes on: a lost datagram is ordinary for RTP, and
/// an ICMP "port unreachable" must not end a call that SIP still holds open.
pub async fn send_paced(
    socket: &UdpSocket,
    dest: SocketAddr,
    codec: Codec,
    samples: &[i16],
    stop: impl Future<Output = ()>,
) -> SendReport {
    let mut rtp = RtpPacketizer::random(codec.payload_type());
    let payloads = payloads(codec, samples);
    let mut interval = tokio::time::interval(PACKET_DURATION);
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    tokio::pin!(stop);
    let mut packets = 0u64;
    for payload in &payloads {
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = interval.tick() => {}
        }
        let packet = rtp.packet(payload, SAMPLES_PER_PACKET as u32);
        if let Err(error) = socket.send_to(&packet, dest).await {
            tracing::debug!(%dest, %error, "RTP send failed");
        }
        packets += 1;
    }
    SendReport {
        packets,
        played: PACKET_DURATION * packets as u32,
        completed: packets == payloads.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_codes() {
        // G.711 table 2: zero is 0xFF (0x7F for negative zero), full scale 0x80 / 0x00.
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        // 0x80 is segment 7, step 15: 8031 at the 14-bit scale, 4 × 8031 = 32124.
        assert_eq!(ulaw_decode(0x80), 32_124);
        assert_eq!(ulaw_decode(0x00), -32_124);
        // The first decision value is 14-bit 1 (16-bit 4); the step above decodes to 2 (8).
        assert_eq!(ulaw_encode(3), 0xFF);
        assert_eq!(ulaw_encode(4), 0xFE);
        assert_eq!(ulaw_decode(0xFE), 8);
        // Segment 1 begins at 14-bit 31 (16-bit 124) and its first step decodes to 33 (132).
        assert_eq!(ulaw_encode(123), 0xF0);
        assert_eq!(ulaw_encode(124), 0xEF);
        assert_eq!(ulaw_decode(0xEF), 132);
    }

    #[test]
    fn alaw_known_codes() {
        // G.711 table 1: the even bits are inverted, so the smallest positive step is 0xD5.
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        // 0xAA is segment 7, step 15: 4032 at the 13-bit scale, 8 × 4032 = 32256.
        assert_eq!(alaw_decode(0xAA), 32_256);
        assert_eq!(alaw_decode(0x2A), -32_256);
        // Segment 1 starts at 13-bit magnitude 32 (256 here).
        assert_eq!(alaw_encode(256), 0x90 ^ 0x55);
        assert_eq!(alaw_decode(0x90 ^ 0x55), 264);
    }

    #[test]
    fn every_code_decodes_to_a_value_that_encodes_back_to_it() {
        for byte in 0..=255u8 {
            let u = ulaw_decode(byte);
            // 0x7F and 0xFF both decode to 0; zero encodes as the positive one.
            let expect = if byte == 0x7F { 0xFF } else { byte };
            assert_eq!(ulaw_encode(u), expect, "µ-law {byte:#04x} -> {u}");
            assert_eq!(alaw_encode(alaw_decode(byte)), byte, "A-law {byte:#04x}");
        }
    }

    #[test]
    fn round_trip_error_stays_within_half_a_step() {
        for sample in i16::MIN..=i16::MAX {
            let x = i32::from(sample);
            // µ-law: a step in segment s is 2^(s+3) wide and starts at 2^(s+7) - 132, so
            // the error is at most (|x| + 132) / 32; beyond the top code (32124) it clips.
            let u = i32::from(ulaw_decode(ulaw_encode(sample)));
            let bound = if x.abs() > 32_124 {
                x.abs() - 32_124
            } else {
                (x.abs() + 132) / 32
            };
            assert!((u - x).abs() <= bound, "µ-law {x} -> {u}");
            // A-law: 16 wide below 512, then at most |x| / 16 wide.
            let a = i32::from(alaw_decode(alaw_encode(sample)));
            assert!((a - x).abs() <= (x.abs() / 32).max(8), "A-law {x} -> {a}");
        }
    }

    #[test]
    fn rtp_header_bytes_are_exact() {
        let mut rtp = RtpPacketizer::new(0, 0x1234_5678, 0xABCD, 0x0102_0304);
        let first = rtp.packet(&[0xFF; 4], 160);
        assert_eq!(
            first,
            [
                0x80, 0x80, 0xAB, 0xCD, 0x01, 0x02, 0x03, 0x04, 0x12, 0x34, 0x56, 0x78, 0xFF, 0xFF,
                0xFF, 0xFF
            ]
        );
        let second = rtp.packet(&[0xD5], 160);
        assert_eq!(
            second,
            [
                0x80, 0x00, 0xAB, 0xCE, 0x01, 0x02, 0x03, 0xA4, 0x12, 0x34, 0x56, 0x78, 0xD5
            ]
        );
        let mut pcma = RtpPacketizer::new(8, 1, 0, 0);
        assert_eq!(pcma.packet(&[], 160)[1], 0x88);
        assert_eq!(pcma.packet(&[], 160)[1], 0x08);
    }

    #[test]
    fn rtp_sequence_and_timestamp_advance_and_wrap() {
        let mut rtp = RtpPacketizer::new(8, 7, u16::MAX - 1, u32::MAX - 159);
        let seqs: Vec<(u16, u32)> = (0..4)
            .map(|_| {
                let p = rtp.packet(&[0; 160], 160);
                (
                    u16::from_be_bytes([p[2], p[3]]),
                    u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                )
            })
            .collect();
        assert_eq!(
            seqs,
            [
                (u16::MAX - 1, u32::MAX - 159),
                (u16::MAX, 0),
                (0, 160),
                (1, 320)
            ]
        );
    }

    #[test]
    fn random_streams_differ() {
        let a = RtpPacketizer::random(0);
        let b = RtpPacketizer::random(0);
        assert!(
            (a.ssrc(), a.next_sequence(), a.next_timestamp())
                != (b.ssrc(), b.next_sequence(), b.next_timestamp())
        );
    }

    #[test]
    fn payloads_are_whole_packets_padded_with_silence() {
        let samples = vec![1000i16; 170];
        let p = payloads(Codec::Pcma, &samples);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|p| p.len() == SAMPLES_PER_PACKET));
        assert_eq!(p[1][9], alaw_encode(1000));
        assert_eq!(p[1][10], 0xD5);
        assert!(payloads(Codec::Pcmu, &[]).is_empty());
    }

    #[tokio::test]
    async fn paced_sender_sends_every_packet_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dest = rx.local_addr().unwrap();
        let samples: Vec<i16> = (0..800).map(|i| (i * 40) as i16).collect();
        let report = send_paced(&tx, dest, Codec::Pcmu, &samples, std::future::pending()).await;
        assert_eq!(
            report,
            SendReport {
                packets: 5,
                played: Duration::from_millis(100),
                completed: true
            }
        );
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        for _ in 0..5 {
            let n = rx.recv(&mut buf).await.unwrap();
            assert_eq!(n, RTP_HEADER_LEN + SAMPLES_PER_PACKET);
            got.push(buf[..n].to_vec());
        }
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        let ts = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        for w in got.windows(2) {
            assert_eq!(seq(&w[1]), seq(&w[0]).wrapping_add(1));
            assert_eq!(ts(&w[1]), ts(&w[0]).wrapping_add(160));
            assert_eq!(w[0][8..12], w[1][8..12]);
        }
        assert_eq!(got[0][1], 0x80);
        assert_eq!(got[1][1], 0x00);
        let decoded: Vec<i16> = got
            .iter()
            .flat_map(|p| Codec::Pcmu.decode(&p[RTP_HEADER_LEN..]))
            .collect();
        assert_eq!(decoded, Codec::Pcmu.decode(&Codec::Pcmu.encode(&samples)));
    }

    #[tokio::test]
    async fn paced_sender_stops_on_request() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let samples = vec![0i16; 8000 * 60];
        let report = send_paced(
            &tx,
            rx.local_addr().unwrap(),
            Codec::Pcma,
            &samples,
            std::future::ready(()),
        )
        .await;
        assert_eq!(report.packets, 0);
        assert!(!report.completed);
    }
}
