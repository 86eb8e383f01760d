//! Synthetic media for the media mock (`media.rs`): real PNG images (stored-deflate encoder, CRC-32 and
//! Adler-32 by hand), 16-bit PCM / WAV tones, μ-law, and MP3 / JPEG through `ffmpeg` when it is on PATH.
#![allow(dead_code)]

use tokio::io::AsyncWriteExt;

/// Seconds of generated speech per character of text.
pub const SECONDS_PER_CHAR: f64 = 0.06;
/// Frequency of the generated tone.
pub const TONE_HZ: f64 = 440.0;

pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

// ---------------------------------------------------------------------------------------------------------
// PNG encoder (8-bit RGB, stored deflate blocks)

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[n] = c;
        n += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (ISO-HDLC, as used by PNG and zip).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c ^ 0xffff_ffff
}

pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// zlib stream made of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 16);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn png_chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A real PNG of `width` × `height`, 8-bit RGB, deterministic gradient derived from `seed`.
pub fn png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let (w, h) = (width.max(1) as usize, height.max(1) as usize);
    let s = splitmix(seed);
    let (sr, sg, sb) = ((s & 0xff) as u8, ((s >> 8) & 0xff) as u8, ((s >> 16) & 0xff) as u8);
    let mut raw = Vec::with_capacity((w * 3 + 1) * h);
    for y in 0..h {
        raw.push(0);
        let gy = (y * 255 / h.max(2).saturating_sub(1).max(1)) as u8;
        for x in 0..w {
            let gx = (x * 255 / w.max(2).saturating_sub(1).max(1)) as u8;
            raw.extend_from_slice(&[gx ^ sr, gy ^ sg, gx.wrapping_add(gy) ^ sb]);
        }
    }
    let mut out = Vec::with_capacity(raw.len() + 1024);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

// ---------------------------------------------------------------------------------------------------------
// Audio

/// `n` samples of a 16-bit little-endian mono sine tone at `rate`.
pub fn pcm_tone(rate: u32, samples: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples * 2);
    for i in 0..samples {
        let t = i as f64 / f64::from(rate.max(1));
        let v = ((t * TONE_HZ * std::f64::consts::TAU).sin() * 0.3 * f64::from(i16::MAX)) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Number of samples for `secs` seconds at `rate`.
pub fn samples_for(rate: u32, secs: f64) -> usize {
    (f64::from(rate) * secs).round() as usize
}

/// Seconds of audio the mock generates for `text`.
pub fn tts_seconds(text: &str) -> f64 {
    text.chars().count() as f64 * SECONDS_PER_CHAR
}

/// RIFF/WAVE container around 16-bit mono PCM.
pub fn wav(rate: u32, pcm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pcm.len() + 44);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

/// Duration in seconds of a PCM WAV file, None when it is not one.
pub fn wav_duration(data: &[u8]) -> Option<f64> {
    if data.len() < 12 || &data[..4] != b"RIFF" || &data[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut byte_rate = None;
    while pos + 8 <= data.len() {
        let id = &data[pos..pos + 4];
        let size = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]) as usize;
        let body = pos + 8;
        if id == b"fmt " && body + 12 <= data.len() {
            let br = u32::from_le_bytes([data[body + 8], data[body + 9], data[body + 10], data[body + 11]]);
            byte_rate = Some(br);
        } else if id == b"data" {
            let avail = size.min(data.len().saturating_sub(body));
            let br = byte_rate.filter(|b| *b > 0)?;
            return Some(avail as f64 / f64::from(br));
        }
        pos = body + size + (size & 1);
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Mp3 { bitrate: u32 },
    Pcm,
    Wav,
    Ulaw,
}

pub fn parse_output_format(f: &str) -> Option<(Codec, u32)> {
    let mut it = f.split('_');
    let codec = it.next()?;
    let rate: u32 = it.next()?.parse().ok()?;
    let extra = it.next();
    let c = match (codec, extra) {
        ("mp3", Some(br)) => Codec::Mp3 { bitrate: br.parse().ok()? },
        ("pcm", None) => Codec::Pcm,
        ("wav", None) => Codec::Wav,
        ("ulaw", None) if rate == 8000 => Codec::Ulaw,
        _ => return None,
    };
    if !(8000..=48000).contains(&rate) {
        return None;
    }
    Some((c, rate))
}

pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = (s + BIAS).min(32635 + BIAS);
    let mut exp = 7;
    let mut mask = 0x4000;
    while exp > 0 && s & mask == 0 {
        exp -= 1;
        mask >>= 1;
    }
    let mant = (s >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) as u8 | mant as u8)
}

pub fn ffmpeg_on_path() -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("ffmpeg").is_file())).unwrap_or(false)
}

pub async fn to_mp3(wav_bytes: Vec<u8>, rate: u32, bitrate: u32) -> std::io::Result<Vec<u8>> {
    let rate = rate.to_string();
    let bitrate = format!("{bitrate}k");
    let args = ["-f", "wav", "-i", "-", "-f", "mp3", "-ar", rate.as_str(), "-b:a", bitrate.as_str(), "-"];
    ffmpeg(&args, wav_bytes).await
}

/// A PNG re-encoded as JPEG.
pub async fn to_jpeg(png_bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    ffmpeg(&["-f", "png_pipe", "-i", "-", "-f", "image2pipe", "-vcodec", "mjpeg", "-"], png_bytes).await
}

/// Runs ffmpeg with `args`, `input` on stdin; answers stdout.
async fn ffmpeg(args: &[&str], input: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::process::Stdio;
    let wav_bytes = input;
    let mut child = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| bad("no stdin"))?;
    let writer = tokio::spawn(async move {
        let r = stdin.write_all(&wav_bytes).await;
        drop(stdin);
        r
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(bad("ffmpeg failed"));
    }
    Ok(out.stdout)
}
