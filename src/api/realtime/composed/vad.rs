//! Server voice activity detection (`turn_detection: server_vad`): the input audio in 20 ms frames, a frame
//! louder than the threshold is speech; speech followed by `silence_duration_ms` of quiet is a finished turn.

use super::session::TurnDetection;

/// What a piece of audio changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Speech began this many milliseconds into the buffer.
    Started(u64),
    /// Speech ended (the quiet began) this many milliseconds into the buffer.
    Stopped(u64),
}

#[derive(Debug, Default)]
pub struct Vad {
    /// Milliseconds of audio seen since the buffer was last committed or cleared.
    position_ms: u64,
    speaking: bool,
    /// Where the current quiet began, while speaking.
    quiet_since: Option<u64>,
    /// Samples of a frame not yet complete.
    partial: Vec<i16>,
}

impl Vad {
    /// The buffer was committed or cleared: positions start again.
    pub fn reset(&mut self) {
        *self = Vad::default();
    }

    #[cfg(test)]
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Feeds PCM16 `samples` at `rate`; answers what changed.
    pub fn feed(&mut self, samples: &[i16], rate: u32, detection: &TurnDetection) -> Vec<Turn> {
        let frame = (rate / 50).max(1) as usize;
        // A threshold of 0.5 is about -26 dBFS RMS: speech is well above it, room noise well below.
        let loud = detection.threshold * 0.1 * f64::from(i16::MAX);
        let mut turns = Vec::new();
        self.partial.extend_from_slice(samples);
        let frames = self.partial.len() / frame;
        for i in 0..frames {
            let chunk = &self.partial[i * frame..(i + 1) * frame];
            let energy = chunk.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / chunk.len() as f64;
            let speech = energy.sqrt() > loud;
            let at = self.position_ms;
            self.position_ms += 20;
            match (self.speaking, speech) {
                (false, true) => {
                    self.speaking = true;
                    self.quiet_since = None;
                    turns.push(Turn::Started(at.saturating_sub(detection.prefix_padding_ms)));
                }
                (true, true) => self.quiet_since = None,
                (true, false) => {
                    let since = *self.quiet_since.get_or_insert(at);
                    if self.position_ms - since >= detection.silence_duration_ms {
                        self.speaking = false;
                        self.quiet_since = None;
                        turns.push(Turn::Stopped(since));
                    }
                }
                (false, false) => {}
            }
        }
        self.partial.drain(..frames * frame);
        turns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DETECTION: TurnDetection =
        TurnDetection { threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500, create_response: true };

    fn tone(ms: usize, amplitude: f64) -> Vec<i16> {
        (0..ms * 24).map(|i| (amplitude * (i as f64 * 0.2).sin()) as i16).collect()
    }

    #[test]
    fn speech_then_quiet_is_a_turn() {
        let mut vad = Vad::default();
        assert!(vad.feed(&tone(400, 100.0), 24_000, &DETECTION).is_empty(), "room noise is not speech");
        assert_eq!(vad.feed(&tone(1000, 20_000.0), 24_000, &DETECTION), vec![Turn::Started(100)]);
        assert!(vad.feed(&tone(300, 0.0), 24_000, &DETECTION).is_empty(), "a pause is not the end");
        assert!(vad.speaking());
        // Fed in odd pieces: frames are put together across calls.
        let quiet = tone(700, 0.0);
        let mut turns = Vec::new();
        for piece in quiet.chunks(1000) {
            turns.extend(vad.feed(piece, 24_000, &DETECTION));
        }
        assert_eq!(turns, vec![Turn::Stopped(1400)]);
        vad.reset();
        assert!(!vad.speaking());
    }
}
