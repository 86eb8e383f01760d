//! Splitting long documents into overlapping chunks for embedding: the model reads at most 256 tokens, so a long
//! text is cut into pieces of at most `max_chars` characters, each starting `overlap` characters before the
//! previous one ended, cut at whitespace where there is any, so that a passage on a boundary is whole in one chunk.

/// The chunks of `text` (trimmed; none when it is blank). `overlap` must be under half of `max_chars`.
pub fn chunk_text(text: &str, max_chars: usize, overlap: usize) -> Vec<String> {
    let chars: Vec<char> = text.trim().chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let max_chars = max_chars.max(2);
    let overlap = overlap.min(max_chars / 2 - 1);
    if chars.len() <= max_chars {
        return vec![chars.iter().collect()];
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    loop {
        let hard_end = (start + max_chars).min(chars.len());
        let end = if hard_end == chars.len() {
            hard_end
        } else {
            // The last whitespace in the second half of the window, else a hard cut.
            (start + max_chars / 2..hard_end).rev().find(|&i| chars[i].is_whitespace()).unwrap_or(hard_end)
        };
        let piece: String = chars[start..end].iter().collect();
        let piece = piece.trim();
        if !piece.is_empty() {
            chunks.push(piece.to_owned());
        }
        if end >= chars.len() {
            break;
        }
        // Step back by the overlap, then forward to the start of a word.
        let mut next = end.saturating_sub(overlap).max(start + 1);
        if next > 0 && !chars[next - 1].is_whitespace() {
            if let Some(space) = (next..end).find(|&i| chars[i].is_whitespace()) {
                next = space + 1;
            }
        }
        start = next;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_one_chunk_and_blank_ones_none() {
        assert_eq!(chunk_text("  hello world  ", 100, 20), vec!["hello world"]);
        assert!(chunk_text(" \n\t ", 100, 20).is_empty());
    }

    #[test]
    fn long_texts_are_cut_at_words_with_overlap() {
        let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let chunks = chunk_text(&text, 200, 50);
        assert!(chunks.len() > 5);
        for chunk in &chunks {
            assert!(chunk.chars().count() <= 200, "{}", chunk.len());
            // Whole words only: every piece is a word of the text.
            assert!(chunk.split(' ').all(|w| words.contains(&w.to_owned())), "{chunk}");
        }
        // Consecutive chunks share words (the overlap), and together they cover every word.
        for pair in chunks.windows(2) {
            let last = pair[0].split(' ').next_back().unwrap_or_default();
            assert!(pair[1].contains(last), "no overlap between {:?} and {:?}", pair[0], pair[1]);
        }
        for word in &words {
            assert!(chunks.iter().any(|c| c.split(' ').any(|w| w == word)), "{word} lost");
        }
    }

    #[test]
    fn text_without_spaces_is_cut_hard_and_multibyte_safe() {
        let text = "é".repeat(1000);
        let chunks = chunk_text(&text, 300, 50);
        assert!(chunks.iter().all(|c| c.chars().count() <= 300));
        let total: usize = chunks.iter().map(|c| c.chars().count()).sum();
        assert!(total >= 1000);
    }
}
