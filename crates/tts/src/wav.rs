//! RIFF/WAVE codec for 16-bit PCM: [`Pcm::encode_wav`] and its decoder [`Pcm::decode_wav`].
//!
//! Only what telephony audio needs: `WAVE_FORMAT_PCM` (and `WAVE_FORMAT_EXTENSIBLE` carrying
//! PCM) at 16 bits per sample, any rate and channel count. Chunks other than `fmt ` and
//! `data` are skipped.

use thiserror::Error;

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// Bytes in a canonical header: RIFF (12) + `fmt ` chunk (8 + 16) + `data` chunk header (8).
const HEADER_LEN: usize = 44;

/// Interleaved 16-bit PCM at any rate and channel count, as found in a WAV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcm {
    /// Frames per second.
    pub sample_rate: u32,
    /// Samples per frame; `samples` is interleaved.
    pub channels: u16,
    /// Interleaved samples; `samples.len()` is a multiple of `channels`.
    pub samples: Vec<i16>,
}

/// Why bytes could not be decoded as a 16-bit PCM WAV.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WavError {
    /// The input does not start with `RIFF....WAVE`.
    #[error("not a RIFF/WAVE file")]
    NotWave,
    /// A chunk header or the `fmt ` chunk is cut short.
    #[error("WAV truncated inside the {chunk} chunk")]
    Truncated {
        /// The chunk being read when the bytes ran out.
        chunk: &'static str,
    },
    /// The `data` chunk came before any `fmt ` chunk, or there was no `fmt ` chunk.
    #[error("WAV has no fmt chunk before its data")]
    MissingFormat,
    /// There is no `data` chunk.
    #[error("WAV has no data chunk")]
    MissingData,
    /// The encoding is not 16-bit PCM.
    #[error("unsupported WAV encoding: format tag {format_tag:#06x}, {bits_per_sample} bits")]
    Unsupported {
        /// `wFormatTag` (for extensible files, the sub-format's tag).
        format_tag: u16,
        /// `wBitsPerSample`.
        bits_per_sample: u16,
    },
    /// The `fmt ` chunk contradicts itself (zero channels or rate, wrong block alignment).
    #[error("inconsistent WAV format: {0}")]
    InvalidFormat(&'static str),
}

impl Pcm {
    /// Number of frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Encodes as a canonical 44-byte-header RIFF/WAVE file.
    ///
    /// # Panics
    /// If the data does not fit the 32-bit RIFF size fields (more than ~2 GiB).
    pub fn encode_wav(&self) -> Vec<u8> {
        let data_len = u32::try_from(self.samples.len() * 2)
            .ok()
            .filter(|len| *len <= u32::MAX - HEADER_LEN as u32)
            .expect("PCM too large for a RIFF file");
        let block_align = self.channels * 2;
        let byte_rate = self.sample_rate * u32::from(block_align);

        let mut out = Vec::with_capacity(HEADER_LEN + data_len as usize);
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(data_len + HEADER_LEN as u32 - 8).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&WAVE_FORMAT_PCM.to_le_bytes());
        out.extend_from_slice(&self.channels.to_le_bytes());
        out.extend_from_slice(&self.sample_rate.to_le_bytes());
        out.extend_from_slice(&byte_rate.to_le_bytes());
        out.extend_from_slice(&block_align.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        for sample in &self.samples {
            out.extend_from_slice(&sample.to_le_bytes());
        }
        out
    }

    /// Decodes a 16-bit PCM WAV.
    ///
    /// A `data` chunk that claims more bytes than the input holds is read to the end of the
    /// input (whole frames only): programs writing WAV to a pipe, espeak-ng `--stdout` among
    /// them, cannot seek back to patch the size and leave a placeholder such as `0x7ffff000`.
    pub fn decode_wav(bytes: &[u8]) -> Result<Pcm, WavError> {
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(WavError::NotWave);
        }
        let mut format: Option<(u16, u32)> = None;
        let mut rest = &bytes[12..];
        loop {
            if rest.is_empty() {
                return Err(if format.is_some() {
                    WavError::MissingData
                } else {
                    WavError::MissingFormat
                });
            }
            if rest.len() < 8 {
                return Err(WavError::Truncated {
                    chunk: "chunk header",
                });
            }
            let id = &rest[0..4];
            let declared = u32_le(&rest[4..8]) as usize;
            let body = &rest[8..];
            match id {
                b"fmt " => {
                    let fmt = body
                        .get(..declared)
                        .ok_or(WavError::Truncated { chunk: "fmt " })?;
                    format = Some(parse_format(fmt)?);
                }
                b"data" => {
                    let (channels, sample_rate) = format.ok_or(WavError::MissingFormat)?;
                    let available = declared.min(body.len());
                    let frame_bytes = usize::from(channels) * 2;
                    let whole = available - available % frame_bytes;
                    let samples = body[..whole]
                        .chunks_exact(2)
                        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
                        .collect();
                    return Ok(Pcm {
                        sample_rate,
                        channels,
                        samples,
                    });
                }
                _ => {}
            }
            // Chunks are padded to an even length.
            let skip = declared.saturating_add(declared % 2);
            rest = body.get(skip..).unwrap_or(&[]);
        }
    }
}

/// Returns `(channels, sample_rate)` of a 16-bit PCM `fmt ` chunk body.
fn parse_format(fmt: &[u8]) -> Result<(u16, u32), WavError> {
    if fmt.len() < 16 {
        return Err(WavError::Truncated { chunk: "fmt " });
    }
    let mut format_tag = u16_le(&fmt[0..2]);
    let channels = u16_le(&fmt[2..4]);
    let sample_rate = u32_le(&fmt[4..8]);
    let block_align = u16_le(&fmt[12..14]);
    let bits_per_sample = u16_le(&fmt[14..16]);
    if format_tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) then the sub-format GUID, whose first two
        // bytes are the format tag.
        let sub = fmt
            .get(24..26)
            .ok_or(WavError::Truncated { chunk: "fmt " })?;
        format_tag = u16_le(sub);
    }
    if format_tag != WAVE_FORMAT_PCM || bits_per_sample != 16 {
        return Err(WavError::Unsupported {
            format_tag,
            bits_per_sample,
        });
    }
    if channels == 0 {
        return Err(WavError::InvalidFormat("zero channels"));
    }
    if sample_rate == 0 {
        return Err(WavError::InvalidFormat("zero sample rate"));
    }
    if u32::from(block_align) != u32::from(channels) * 2 {
        return Err(WavError::InvalidFormat(
            "block alignment is not channels x 2 bytes",
        ));
    }
    Ok((channels, sample_rate))
}

fn u16_le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mono(samples: Vec<i16>) -> Pcm {
        Pcm {
            sample_rate: 8000,
            channels: 1,
            samples,
        }
    }

    #[test]
    fn encoder_writes_the_canonical_header_byte_for_byte() {
        let wav = mono(vec![1, -2]).encode_wav();
        let expected: Vec<u8> = [
            b"RIFF".as_slice(),
            &40u32.to_le_bytes(),
            b"WAVE",
            b"fmt ",
            &16u32.to_le_bytes(),
            &1u16.to_le_bytes(),
            &1u16.to_le_bytes(),
            &8000u32.to_le_bytes(),
            &16000u32.to_le_bytes(),
            &2u16.to_le_bytes(),
            &16u16.to_le_bytes(),
            b"data",
            &4u32.to_le_bytes(),
            &[0x01, 0x00, 0xfe, 0xff],
        ]
        .concat();
        assert_eq!(wav, expected);
    }

    #[test]
    fn stereo_round_trips() {
        let pcm = Pcm {
            sample_rate: 22050,
            channels: 2,
            samples: vec![i16::MIN, i16::MAX, 0, -1, 300, -300],
        };
        assert_eq!(Pcm::decode_wav(&pcm.encode_wav()).unwrap(), pcm);
        assert_eq!(pcm.frames(), 3);
    }

    #[test]
    fn placeholder_data_size_from_a_pipe_reads_to_the_end_in_whole_frames() {
        let mut wav = mono(vec![5, 6, 7]).encode_wav();
        wav[40..44].copy_from_slice(&0x7fff_f000u32.to_le_bytes());
        wav.push(0xAA); // half a sample: dropped
        assert_eq!(Pcm::decode_wav(&wav).unwrap().samples, vec![5, 6, 7]);
    }

    #[test]
    fn unknown_chunks_are_skipped_including_padding() {
        let wav = mono(vec![9]).encode_wav();
        let mut with_list = wav[..36].to_vec();
        with_list.extend_from_slice(b"LIST");
        with_list.extend_from_slice(&3u32.to_le_bytes());
        with_list.extend_from_slice(&[1, 2, 3, 0]);
        with_list.extend_from_slice(&wav[36..]);
        assert_eq!(Pcm::decode_wav(&with_list).unwrap().samples, vec![9]);
    }

    #[test]
    fn malformed_input_maps_to_named_errors() {
        assert_eq!(Pcm::decode_wav(b"RIFX0000WAVE"), Err(WavError::NotWave));
        assert_eq!(Pcm::decode_wav(b""), Err(WavError::NotWave));

        let wav = mono(vec![1]).encode_wav();
        assert_eq!(
            Pcm::decode_wav(&wav[..30]),
            Err(WavError::Truncated { chunk: "fmt " })
        );
        assert_eq!(Pcm::decode_wav(&wav[..36]), Err(WavError::MissingData));
        assert_eq!(Pcm::decode_wav(&wav[..12]), Err(WavError::MissingFormat));

        let mut eight_bit = wav.clone();
        eight_bit[34] = 8;
        assert_eq!(
            Pcm::decode_wav(&eight_bit),
            Err(WavError::Unsupported {
                format_tag: 1,
                bits_per_sample: 8
            })
        );

        let mut float = wav.clone();
        float[20] = 3;
        assert!(matches!(
            Pcm::decode_wav(&float),
            Err(WavError::Unsupported { format_tag: 3, .. })
        ));

        let mut no_channels = wav;
        no_channels[22] = 0;
        assert_eq!(
            Pcm::decode_wav(&no_channels),
            Err(WavError::InvalidFormat("zero channels"))
        );
    }
}
