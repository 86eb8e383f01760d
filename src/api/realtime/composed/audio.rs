//! The session's audio formats (OpenAI Realtime's `audio/pcm` at 24 kHz, `audio/pcmu` and `audio/pcma` at 8 kHz):
//! G.711 both ways, and linear resampling of PCM16.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One of the protocol's audio formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// PCM16 little-endian mono at 24 kHz.
    Pcm,
    /// G.711 μ-law at 8 kHz.
    Pcmu,
    /// G.711 A-law at 8 kHz.
    Pcma,
}

impl Format {
    /// From the protocol's `{"type": "audio/pcm", "rate": 24000}` (or the beta names `pcm16`, `g711_ulaw`,
    /// `g711_alaw`). An unknown format or another PCM rate is refused with the reason.
    pub fn parse(value: &Value) -> Result<Format, String> {
        let name = value.get("type").and_then(Value::as_str).or_else(|| value.as_str()).unwrap_or_default();
        let format = match name {
            "audio/pcm" | "pcm16" => Format::Pcm,
            "audio/pcmu" | "g711_ulaw" => Format::Pcmu,
            "audio/pcma" | "g711_alaw" => Format::Pcma,
            other => return Err(format!("audio format `{other}` is not one of audio/pcm, audio/pcmu, audio/pcma")),
        };
        match value.get("rate").and_then(Value::as_u64) {
            Some(rate) if format == Format::Pcm && rate != 24_000 => {
                Err(format!("audio/pcm is taken at 24000 Hz, not {rate}"))
            }
            _ => Ok(format),
        }
    }

    pub fn to_json(self) -> Value {
        match self {
            Format::Pcm => json!({"type": "audio/pcm", "rate": 24000}),
            Format::Pcmu => json!({"type": "audio/pcmu"}),
            Format::Pcma => json!({"type": "audio/pcma"}),
        }
    }

    pub fn rate(self) -> u32 {
        match self {
            Format::Pcm => 24_000,
            Format::Pcmu | Format::Pcma => 8_000,
        }
    }

    /// Bytes per second of audio in this format.
    pub fn bytes_per_second(self) -> u64 {
        match self {
            Format::Pcm => 48_000,
            Format::Pcmu | Format::Pcma => 8_000,
        }
    }

    /// The PCM16 samples of `bytes` in this format (an odd PCM byte count is refused).
    pub fn decode(self, bytes: &[u8]) -> Result<Vec<i16>, String> {
        match self {
            Format::Pcm if bytes.len() % 2 == 1 => {
                Err("audio/pcm is 16-bit samples: an odd number of bytes cannot be audio/pcm".into())
            }
            Format::Pcm => Ok(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()),
            Format::Pcmu => Ok(bytes.iter().map(|&b| ulaw_decode(b)).collect()),
            Format::Pcma => Ok(bytes.iter().map(|&b| alaw_decode(b)).collect()),
        }
    }

    /// `samples` (PCM16 at `rate`) in this format.
    #[cfg(test)]
    pub fn encode(self, samples: &[i16], rate: u32) -> Vec<u8> {
        self.encode_at_rate(&resample(samples, rate, self.rate()))
    }

    /// `samples`, already at this format's rate, in this format.
    fn encode_at_rate(self, samples: &[i16]) -> Vec<u8> {
        match self {
            Format::Pcm => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
            Format::Pcmu => samples.iter().map(|&s| ulaw_encode(s)).collect(),
            Format::Pcma => samples.iter().map(|&s| alaw_encode(s)).collect(),
        }
    }
}

/// A stream of PCM16 at one rate made into a format, chunk by chunk, with no sample lost or doubled at the seams.
pub struct Encoder {
    format: Format,
    resampler: Resampler,
}

impl Encoder {
    pub fn new(format: Format, from: u32) -> Encoder {
        Encoder { format, resampler: Resampler::new(from, format.rate()) }
    }

    pub fn push(&mut self, samples: &[i16]) -> Vec<u8> {
        let samples = self.resampler.push(samples);
        self.format.encode_at_rate(&samples)
    }
}

/// A stream of PCM16 from one rate to another (linear interpolation), chunk by chunk, with no sample lost or
/// doubled at the seams.
pub struct Resampler {
    from: u32,
    to: u32,
    /// Input samples not yet used up, and the position of the next output sample among them.
    pending: Vec<i16>,
    at: f64,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Resampler {
        Resampler { from, to, pending: Vec::new(), at: 0.0 }
    }

    /// The rate the input is taken at.
    pub fn from(&self) -> u32 {
        self.from
    }

    /// The output for `samples`; the last input sample is kept for the next chunk (it is needed to interpolate).
    pub fn push(&mut self, samples: &[i16]) -> Vec<i16> {
        if self.from == self.to {
            return samples.to_vec();
        }
        self.pending.extend_from_slice(samples);
        let step = f64::from(self.from) / f64::from(self.to);
        let mut out = Vec::with_capacity((samples.len() as f64 / step) as usize + 1);
        while (self.at as usize) + 1 < self.pending.len() {
            let j = self.at as usize;
            let frac = self.at - j as f64;
            let (a, b) = (f64::from(self.pending[j]), f64::from(self.pending[j + 1]));
            out.push((a + (b - a) * frac).round() as i16);
            self.at += step;
        }
        let used = (self.at as usize).min(self.pending.len());
        self.pending.drain(..used);
        self.at -= used as f64;
        out
    }

    /// The end of the stream: the output still owed for the samples kept back (the last standing for the next).
    pub fn flush(&mut self) -> Vec<i16> {
        let step = f64::from(self.from) / f64::from(self.to);
        let mut out = Vec::new();
        while self.from != self.to && (self.at as usize) < self.pending.len() {
            let j = self.at as usize;
            let frac = self.at - j as f64;
            let a = f64::from(self.pending[j]);
            let b = self.pending.get(j + 1).map_or(a, |&b| f64::from(b));
            out.push((a + (b - a) * frac).round() as i16);
            self.at += step;
        }
        self.pending.clear();
        self.at = 0.0;
        out
    }
}

/// PCM16 little-endian bytes as samples (an odd trailing byte is dropped).
pub fn pcm16(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// Linear interpolation from `from` Hz to `to` Hz.
#[cfg(test)]
pub fn resample(samples: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || samples.is_empty() || from == 0 || to == 0 {
        return samples.to_vec();
    }
    let out_len = (samples.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..out_len)
        .map(|i| {
            let at = i as f64 * step;
            let j = at as usize;
            let frac = at - j as f64;
            let a = f64::from(samples[j.min(samples.len() - 1)]);
            let b = f64::from(samples[(j + 1).min(samples.len() - 1)]);
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

pub use crate::audio::wav;

const BIAS: i32 = 0x84;

fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(32_635) + BIAS;
    let mut exponent = 7;
    while exponent > 0 && s & (0x80 << exponent) == 0 {
        exponent -= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

fn alaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3;
    let mask = if s >= 0 {
        0xD5
    } else {
        s = -s - 1;
        0x55
    };
    let segment = (0..8).find(|seg| s < (0x20 << seg)).unwrap_or(8);
    if segment >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mantissa = if segment < 2 { (s >> 1) & 0x0F } else { (s >> segment) & 0x0F };
    (((segment << 4) | mantissa) ^ mask) as u8
}

fn alaw_decode(byte: u8) -> i16 {
    let b = i32::from(byte ^ 0x55);
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0F;
    let magnitude = if exponent == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (exponent - 1) };
    (if b & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_round_trips_within_its_quantisation() {
        for s in [0i16, 1, -1, 100, -100, 1000, -1000, 12_345, -12_345, 32_000, -32_000, i16::MAX, i16::MIN] {
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            let tolerance = (i32::from(s).abs() / 16).max(16);
            assert!((i32::from(u) - i32::from(s)).abs() <= tolerance, "μ-law {s} → {u}");
            assert!((i32::from(a) - i32::from(s)).abs() <= tolerance, "A-law {s} → {a}");
        }
        // The codes every G.711 table agrees on: silence.
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
    }

    #[test]
    fn formats_parse_decode_and_encode() {
        assert_eq!(Format::parse(&json!({"type": "audio/pcm", "rate": 24000})), Ok(Format::Pcm));
        assert_eq!(Format::parse(&json!("g711_ulaw")), Ok(Format::Pcmu));
        assert!(Format::parse(&json!({"type": "audio/pcm", "rate": 16000})).unwrap_err().contains("24000"));
        assert!(Format::parse(&json!({"type": "audio/opus"})).unwrap_err().contains("audio/opus"));
        assert!(Format::Pcm.decode(&[1, 2, 3]).is_err());
        assert_eq!(Format::Pcm.decode(&[1, 0, 255, 255]), Ok(vec![1, -1]));
        // 24 kHz to 8 kHz: a third of the samples, one byte each.
        assert_eq!(Format::Pcmu.encode(&[0; 2400], 24_000).len(), 800);
        assert_eq!(Format::Pcm.encode(&[0; 800], 8_000).len(), 4800);
        assert_eq!(resample(&[0, 300], 1, 2), vec![0, 150, 300, 300]);
        // Chunk by chunk, as the speaker's audio comes: nothing lost at the seams.
        let mut encoder = Encoder::new(Format::Pcmu, 24_000);
        let made: usize = (0..100).map(|_| encoder.push(&[0; 2_401]).len()).sum();
        assert!((made as i64 - 240_100 / 3).abs() <= 1, "{made}");
        // To 16 kHz for speech to text, in uneven pieces, then flushed: every sample owed, exactly.
        for (from, pieces) in [(24_000, [7_001usize, 4_999, 12_000]), (8_000, [1_001, 2_999, 4_000])] {
            let mut resampler = Resampler::new(from, 16_000);
            let mut made: usize = pieces.iter().map(|&n| resampler.push(&vec![0; n]).len()).sum();
            made += resampler.flush().len();
            let total: usize = pieces.iter().sum();
            assert_eq!(made, total * 16_000 / from as usize, "from {from} Hz");
        }
    }

    #[test]
    fn a_wav_header_describes_its_samples() {
        let file = wav(&[0; 24_000], 24_000);
        assert_eq!(file.len(), 44 + 48_000);
        assert_eq!(&file[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([file[24], file[25], file[26], file[27]]), 24_000);
    }
}
