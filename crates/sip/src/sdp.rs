//! The SDP we offer (RFC 4566, offer/answer per RFC 3264) and the parts of an answer we use.
//!
//! The offer has one audio stream with our codecs in preference order, their `rtpmap`
//! lines and `ptime:20`. From the answer we take the connection address (media level
//! overriding session level), the port, and the first payload type in the answer's
//! `m=audio` line that is one of ours: RFC 3264 section 6.1 lets the answerer order the
//! formats by its preference, and we honour it.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::media::Codec;

/// The direction attribute of our audio stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// `a=sendrecv`: what most trunks expect even from a one-way prompt.
    #[default]
    SendRecv,
    /// `a=sendonly`: we only play; the callee need not send media.
    SendOnly,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
        }
    }
}

/// An audio offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The `o=` session id and version (the same number for a first offer).
    pub session_id: u64,
    /// Where we receive RTP (and put in `o=` and `c=`).
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// Codecs in preference order; must not be empty.
    pub codecs: Vec<Codec>,
    /// The stream's direction.
    pub direction: Direction,
}

impl Offer {
    /// The SDP text, CRLF line ends.
    pub fn to_sdp(&self) -> String {
        let ip = match self.address {
            IpAddr::V4(_) => "IP4",
            IpAddr::V6(_) => "IP6",
        };
        let mut s = String::new();
        let pts: Vec<String> = self
            .codecs
            .iter()
            .map(|c| c.payload_type().to_string())
            .collect();
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "v=0\r\no=- {id} {id} IN {ip} {addr}\r\ns=-\r\nc=IN {ip} {addr}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {pts}\r\n",
            id = self.session_id,
            addr = self.address,
            port = self.port,
            pts = pts.join(" "),
        );
        for codec in &self.codecs {
            let _ = write!(
                s,
                "a=rtpmap:{} {}/8000\r\n",
                codec.payload_type(),
                codec.encoding_name()
            );
        }
        let _ = write!(s, "a=ptime:20\r\na={}\r\n", self.direction.attribute());
        s
    }
}

/// What we use from an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Where to send RTP.
    pub destination: SocketAddr,
    /// The codec to send with.
    pub codec: Codec,
}

/// Why an answer cannot be used.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is not UTF-8 text.
    #[error("SDP is not UTF-8 text")]
    NotText,
    /// There is no `m=audio` line.
    #[error("SDP has no audio stream")]
    NoAudio,
    /// The audio stream was rejected (port 0).
    #[error("the audio stream was rejected (port 0)")]
    AudioRejected,
    /// None of the answer's formats is one we offered.
    #[error("no common codec: the answer has payload types {offered:?}")]
    NoCommonCodec {
        /// The formats the answer listed.
        offered: Vec<String>,
    },
    /// No `c=` line applies to the audio stream.
    #[error("SDP has no connection address for audio")]
    NoConnection,
    /// A line the answer relies on could not be read.
    #[error("malformed SDP line {line:?}")]
    Malformed {
        /// The line.
        line: String,
    },
}

/// Reads an answer to an offer of `ours`.
pub fn parse_answer(body: &[u8], ours: &[Codec]) -> Result<Answer, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
    let mut session_addr = None;
    let mut audio: Option<(u16, Vec<String>, Option<IpAddr>)> = None;
    // Which section the current line belongs to: the session, our audio stream, or another.
    let mut in_media = false;
    let mut in_audio = false;
    for line in text.lines().map(str::trim_end) {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "m" => {
                let mut fields = value.split_ascii_whitespace();
                let media = fields.next();
                in_media = true;
                in_audio = media == Some("audio") && audio.is_none();
                if in_audio {
                    let port = fields
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| malformed(line))?;
                    let _proto = fields.next().ok_or_else(|| malformed(line))?;
                    audio = Some((port, fields.map(str::to_owned).collect(), None));
                }
            }
            "c" => {
                let addr = parse_connection(value).ok_or_else(|| malformed(line))?;
                if !in_media {
                    session_addr = Some(addr);
                } else if let (true, Some((_, _, media_addr))) = (in_audio, &mut audio) {
                    *media_addr = Some(addr);
                }
            }
            _ => {}
        }
    }
    let (port, formats, media_addr) = audio.ok_or(SdpError::NoAudio)?;
    if port == 0 {
        return Err(SdpError::AudioRejected);
    }
    let codec = formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(Codec::from_payload_type)
        .find(|c| ours.contains(c))
        .ok_or(SdpError::NoCommonCodec { offered: formats })?;
    let addr = media_addr.or(session_addr).ok_or(SdpError::NoConnection)?;
    Ok(Answer {
        destination: SocketAddr::new(addr, port),
        codec,
    })
}

fn malformed(line: &str) -> SdpError {
    SdpError::Malformed {
        line: line.to_owned(),
    }
}

/// `IN IP4 192.0.2.1` (a multicast `/ttl` suffix is dropped).
fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut fields = value.split_ascii_whitespace();
    if fields.next() != Some("IN") {
        return None;
    }
    let _family = fields.next()?;
    fields.next()?.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_lists_both_codecs_with_rtpmap_and_ptime() {
        let offer = Offer {
            session_id: 42,
            address: "127.0.0.1".parse().unwrap(),
            port: 40_000,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            direction: Direction::SendRecv,
        };
        assert_eq!(
            offer.to_sdp(),
            "v=0\r\n\
             o=- 42 42 IN IP4 127.0.0.1\r\n\
             s=-\r\n\
             c=IN IP4 127.0.0.1\r\n\
             t=0 0\r\n\
             m=audio 40000 RTP/AVP 0 8\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        let sendonly = Offer {
            direction: Direction::SendOnly,
            codecs: vec![Codec::Pcma],
            ..offer
        };
        assert!(sendonly.to_sdp().ends_with(
            "m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendonly\r\n"
        ));
    }

    const OURS: &[Codec] = &[Codec::Pcmu, Codec::Pcma];

    #[test]
    fn answer_gives_address_port_and_first_common_codec() {
        let body = b"v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 5004 RTP/AVP 101 8 0\r\na=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(
            parse_answer(body, OURS).unwrap(),
            Answer {
                destination: "10.0.0.1:5004".parse().unwrap(),
                codec: Codec::Pcma
            }
        );
        // Our own preference decides nothing; only what we offered counts.
        assert_eq!(
            parse_answer(body, &[Codec::Pcmu]).unwrap().codec,
            Codec::Pcmu
        );
    }

    #[test]
    fn media_level_connection_overrides_session_level() {
        let body = "v=0\nc=IN IP4 10.0.0.1\nm=video 6000 RTP/AVP 96\nc=IN IP4 10.0.0.3\n\
                    m=audio 7000 RTP/AVP 0\nc=IN IP4 127.0.0.1\n";
        let answer = parse_answer(body.as_bytes(), OURS).unwrap();
        assert_eq!(answer.destination, "127.0.0.1:7000".parse().unwrap());
        let session_only = "v=0\nc=IN IP4 10.0.0.1\nm=audio 7000 RTP/AVP 0\n";
        assert_eq!(
            parse_answer(session_only.as_bytes(), OURS)
                .unwrap()
                .destination,
            "10.0.0.1:7000".parse().unwrap()
        );
    }

    #[test]
    fn unusable_answers_are_named_errors() {
        assert_eq!(
            parse_answer(
                b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5004 RTP/AVP 9 18\r\n",
                OURS
            ),
            Err(SdpError::NoCommonCodec {
                offered: vec!["9".into(), "18".into()]
            })
        );
        assert_eq!(
            parse_answer(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n", OURS),
            Err(SdpError::AudioRejected)
        );
        assert_eq!(
            parse_answer(b"v=0\r\nc=IN IP4 1.2.3.4\r\n", OURS),
            Err(SdpError::NoAudio)
        );
        assert_eq!(
            parse_answer(b"v=0\r\nm=audio 5004 RTP/AVP 0\r\n", OURS),
            Err(SdpError::NoConnection)
        );
        assert_eq!(
            parse_answer(b"m=audio x RTP/AVP 0\r\n", OURS),
            Err(SdpError::Malformed {
                line: "m=audio x RTP/AVP 0".into()
            })
        );
        assert_eq!(parse_answer(&[0xff, 0xfe], OURS), Err(SdpError::NotText));
    }
}
