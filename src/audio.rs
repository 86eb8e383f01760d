//! How long a piece of audio is: its container's packets counted (Symphonia's format readers; no decoding), or the
//! byte count for raw PCM and μ-law. Speech is billed per second of audio in, and reported per second out.

use bytes::Bytes;

/// Milliseconds of audio in `bytes` of `content_type` (as recognised from the bytes). `None` when the audio cannot
/// be read. CPU work for long files: call it off the async workers (`duration_ms_blocking`).
pub fn duration_ms(bytes: Bytes, content_type: &str) -> Option<u64> {
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;
    use symphonia::core::units::TimeBase;

    let mut hint = Hint::new();
    if let Some(extension) = extension(content_type) {
        hint.with_extension(extension);
    }
    let source = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let probed = symphonia::default::get_probe()
        .format(&hint, source, &FormatOptions::default(), &MetadataOptions::default())
        .ok()?;
    let mut format = probed.format;
    let track = format.default_track()?;
    let params = track.codec_params.clone();
    let track_id = track.id;
    // The packets are counted rather than the header believed: a file cut short (a WAV whose header promises more
    // than follows) is measured by what is there, and one with no audio at all has no length.
    let time_base = params.time_base.or_else(|| params.sample_rate.map(|r| TimeBase::new(1, r)))?;
    let mut total: u64 = 0;
    let mut packets = 0u64;
    while let Ok(packet) = format.next_packet() {
        if packet.track_id() == track_id {
            total += packet.dur;
            packets += 1;
        }
    }
    if packets == 0 || total == 0 {
        return None;
    }
    // A partial last packet counts whole; a complete file's header knows the exact frame count.
    if let Some(frames) = params.n_frames.filter(|f| *f > 0 && params.time_base.is_none_or(|tb| tb.numer == 1)) {
        total = total.min(frames);
    }
    let time = time_base.calc_time(total);
    Some(time.seconds * 1000 + (time.frac * 1000.0).round() as u64)
}

/// `duration_ms` on the blocking pool, so a long file does not hold up an HTTP worker.
pub async fn duration_ms_blocking(bytes: Bytes, content_type: &str) -> Option<u64> {
    let content_type = content_type.to_owned();
    tokio::task::spawn_blocking(move || duration_ms(bytes, &content_type)).await.ok().flatten()
}

/// Milliseconds of raw audio in an output format without a container: `pcm_<rate>` (16-bit mono) or `ulaw_8000`.
pub fn raw_duration_ms(format: &str, bytes: u64) -> Option<u64> {
    let (codec, rate) = format.split_once('_')?;
    let rate: u64 = rate.split('_').next()?.parse().ok().filter(|r| *r > 0)?;
    let bytes_per_sample = match codec {
        "pcm" => 2,
        "ulaw" => 1,
        _ => return None,
    };
    Some(bytes * 1000 / (rate * bytes_per_sample))
}

fn extension(content_type: &str) -> Option<&'static str> {
    Some(match content_type {
        "audio/mpeg" => "mp3",
        "audio/wav" => "wav",
        "audio/ogg" => "ogg",
        "audio/flac" => "flac",
        "audio/mp4" => "m4a",
        _ => return None,
    })
}

/// A WAV file of PCM16 mono `samples` at `rate`.
pub fn wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    out.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, samples: u32) -> Vec<u8> {
        super::wav(&vec![0; samples as usize], rate)
    }

    #[test]
    fn reads_the_length_of_a_wav() {
        assert_eq!(duration_ms(Bytes::from(wav(16_000, 24_000)), "audio/wav"), Some(1500));
    }

    #[test]
    fn a_wav_cut_short_is_measured_by_what_is_there() {
        let whole = wav(16_000, 32_000);
        // 8,000 samples are there; the last packet, partial, is counted whole.
        let cut = duration_ms(Bytes::from(whole[..44 + 16_000].to_vec()), "audio/wav").unwrap();
        assert!((500..=540).contains(&cut), "{cut} ms");
        assert_eq!(duration_ms(Bytes::from(whole.clone()), "audio/wav"), Some(2000), "a whole file to the millisecond");
        assert_eq!(duration_ms(Bytes::from(whole[..44].to_vec()), "audio/wav"), None);
    }

    #[test]
    fn garbage_has_no_length() {
        assert_eq!(duration_ms(Bytes::from_static(b"not audio at all, just text"), "audio/mpeg"), None);
        assert_eq!(duration_ms(Bytes::new(), "audio/wav"), None);
    }

    #[test]
    fn raw_formats_are_counted_by_bytes() {
        assert_eq!(raw_duration_ms("pcm_16000", 32_000), Some(1000));
        assert_eq!(raw_duration_ms("ulaw_8000", 4_000), Some(500));
        assert_eq!(raw_duration_ms("mp3_44100_128", 4_000), None);
    }
}
