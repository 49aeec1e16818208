//! [`Audio`]: what every engine returns, 8 kHz mono 16-bit PCM, ready for G.711.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::resample::Resampler;
use crate::wav::{Pcm, WavError};

/// Rendered speech: 8 kHz, mono, 16-bit signed PCM, the input a G.711 (PCMU/PCMA) encoder
/// takes. Cloning is cheap (the samples are shared), which is what lets the render cache
/// hand out copies.
#[derive(Clone, PartialEq, Eq)]
pub struct Audio {
    samples: Arc<[i16]>,
}

impl Audio {
    /// The only rate an `Audio` holds.
    pub const SAMPLE_RATE: u32 = 8000;

    /// Wraps samples that are already 8 kHz mono.
    pub fn from_samples(samples: Vec<i16>) -> Audio {
        Audio {
            samples: samples.into(),
        }
    }

    /// Converts PCM at any rate and channel count: channels are averaged, then the signal
    /// is resampled to 8 kHz through the anti-alias filter of [`Resampler`].
    pub fn from_pcm(pcm: &Pcm) -> Audio {
        let mono = downmix(pcm);
        if pcm.sample_rate == Self::SAMPLE_RATE {
            return Audio::from_samples(mono.iter().map(|s| to_i16(*s)).collect());
        }
        let resampled = Resampler::new(pcm.sample_rate, Self::SAMPLE_RATE).process(&mono);
        Audio::from_samples(resampled.into_iter().map(to_i16).collect())
    }

    /// Decodes a 16-bit PCM WAV of any rate and channel count (a recording, a fixture)
    /// and converts it as [`Audio::from_pcm`] does.
    pub fn from_wav_bytes(bytes: &[u8]) -> Result<Audio, WavError> {
        Ok(Audio::from_pcm(&Pcm::decode_wav(bytes)?))
    }

    /// Encodes as a 8 kHz mono 16-bit WAV file.
    pub fn to_wav_bytes(&self) -> Vec<u8> {
        Pcm {
            sample_rate: Self::SAMPLE_RATE,
            channels: 1,
            samples: self.samples.to_vec(),
        }
        .encode_wav()
    }

    /// The samples, 8000 per second.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Playing time.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(Self::SAMPLE_RATE))
    }

    /// Memory held by the samples; what the render cache charges against its budget.
    pub fn byte_len(&self) -> usize {
        self.samples.len() * size_of::<i16>()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

impl fmt::Debug for Audio {
    // Thousands of samples help nobody reading a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audio")
            .field("samples", &self.samples.len())
            .field("duration", &self.duration())
            .finish()
    }
}

/// Averages the channels of each frame, scaled to [-1, 1).
fn downmix(pcm: &Pcm) -> Vec<f32> {
    let channels = usize::from(pcm.channels.max(1));
    pcm.samples
        .chunks_exact(channels)
        .map(|frame| frame.iter().map(|s| f32::from(*s)).sum::<f32>() / (channels as f32 * 32768.0))
        .collect()
}

fn to_i16(sample: f32) -> i16 {
    (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trip_is_exact_at_8khz() {
        let audio = Audio::from_samples(vec![0, 1, -1, i16::MAX, i16::MIN, 1234]);
        let back = Audio::from_wav_bytes(&audio.to_wav_bytes()).unwrap();
        assert_eq!(back, audio);
    }

    #[test]
    fn duration_counts_8000_samples_per_second() {
        let audio = Audio::from_samples(vec![0; 12000]);
        assert_eq!(audio.duration(), Duration::from_millis(1500));
        assert_eq!(audio.byte_len(), 24000);
        assert_eq!(
            format!("{audio:?}"),
            "Audio { samples: 12000, duration: 1.5s }"
        );
    }

    #[test]
    fn a_stereo_44100_wav_becomes_8khz_mono() {
        // Left and right at half scale and silent: the mix is a quarter-scale constant.
        let pcm = Pcm {
            sample_rate: 44100,
            channels: 2,
            samples: [16384i16, 0].repeat(44100),
        };
        let audio = Audio::from_wav_bytes(&pcm.encode_wav()).unwrap();
        assert_eq!(audio.samples().len(), 8000);
        assert!(
            audio.samples()[1000..7000]
                .iter()
                .all(|s| (*s - 8192).abs() <= 1)
        );
    }

    #[test]
    fn clipping_saturates_instead_of_wrapping() {
        assert_eq!(to_i16(1.5), i16::MAX);
        assert_eq!(to_i16(-1.5), i16::MIN);
        assert_eq!(to_i16(0.5), 16384);
    }
}
