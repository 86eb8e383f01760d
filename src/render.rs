//! Task outputs turned into files: a model's text or markdown rendered into a real PDF (printpdf, the built-in
//! Helvetica faces, A4 pages, wrapped and paginated), and CSV checked by parsing it.

use printpdf::{BuiltinFont, Mm, Op, PdfDocument, PdfPage, PdfSaveOptions, Point, Pt, TextItem};

const PAGE_WIDTH_MM: f32 = 210.0;
const PAGE_HEIGHT_MM: f32 = 297.0;
const MARGIN_MM: f32 = 20.0;
const BODY_PT: f32 = 11.0;

/// A line of the document: its text, face and size.
struct Line {
    text: String,
    font: BuiltinFont,
    size: f32,
}

/// The built-in faces speak WinAnsi: other characters become `?`, typographic quotes and dashes plain ones.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201C}' | '\u{201D}' => '"',
            '\u{2013}' | '\u{2014}' => '-',
            '\u{2022}' => '-',
            '\t' => ' ',
            c if (c as u32) < 0x20 => ' ',
            c if (c as u32) <= 0xFF => c,
            _ => '?',
        })
        .collect()
}

/// Wraps `text` at about `width` characters, breaking between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_owned();
        while word.chars().count() > width {
            let head: String = word.chars().take(width).collect();
            let tail: String = word.chars().skip(width).collect();
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            lines.push(head);
            word = tail;
        }
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// Markdown as lines: `#` headings in bold and larger, `**`/`__`/backticks dropped, lists kept with a dash.
fn layout(markdown: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let usable_pt = (PAGE_WIDTH_MM - 2.0 * MARGIN_MM) * 72.0 / 25.4;
    for raw in markdown.lines() {
        let trimmed = raw.trim_end();
        if trimmed.trim().is_empty() {
            lines.push(Line { text: String::new(), font: BuiltinFont::Helvetica, size: BODY_PT });
            continue;
        }
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        let (text, font, size) = if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
            let size = match hashes {
                1 => 18.0,
                2 => 15.0,
                _ => 13.0,
            };
            (trimmed[hashes..].trim().to_owned(), BuiltinFont::HelveticaBold, size)
        } else {
            let text = trimmed.trim_start();
            let text = match text.strip_prefix("* ").or_else(|| text.strip_prefix("+ ")) {
                Some(item) => format!("- {item}"),
                None => text.to_owned(),
            };
            (text, BuiltinFont::Helvetica, BODY_PT)
        };
        let text = printable(&text.replace("**", "").replace("__", "").replace('`', ""));
        // Helvetica averages about half an em per character.
        let width = (usable_pt / (size * 0.5)) as usize;
        for piece in wrap(&text, width.max(10)) {
            lines.push(Line { text: piece, font, size });
        }
    }
    lines
}

/// Renders `markdown` as an A4 PDF titled `title`.
pub fn pdf(title: &str, markdown: &str) -> Vec<u8> {
    let mut doc = PdfDocument::new(&printable(title));
    let mut pages = Vec::new();
    let mut ops = Vec::new();
    let top = PAGE_HEIGHT_MM - MARGIN_MM;
    let mut y = top;
    let start_page = |ops: &mut Vec<Op>| {
        ops.push(Op::StartTextSection);
    };
    start_page(&mut ops);
    for line in layout(markdown) {
        let advance = line.size * 1.35 * 25.4 / 72.0;
        if y - advance < MARGIN_MM {
            ops.push(Op::EndTextSection);
            pages.push(PdfPage::new(Mm(PAGE_WIDTH_MM), Mm(PAGE_HEIGHT_MM), std::mem::take(&mut ops)));
            start_page(&mut ops);
            y = top;
        }
        y -= advance;
        if line.text.is_empty() {
            continue;
        }
        ops.push(Op::SetTextCursor { pos: Point::new(Mm(MARGIN_MM), Mm(y)) });
        ops.push(Op::SetFontSizeBuiltinFont { size: Pt(line.size), font: line.font });
        ops.push(Op::WriteTextBuiltinFont { items: vec![TextItem::Text(line.text)], font: line.font });
        // Text cursors are relative inside a section: end it so the next line is placed absolutely.
        ops.push(Op::EndTextSection);
        ops.push(Op::StartTextSection);
    }
    ops.push(Op::EndTextSection);
    pages.push(PdfPage::new(Mm(PAGE_WIDTH_MM), Mm(PAGE_HEIGHT_MM), ops));
    doc.with_pages(pages).save(&PdfSaveOptions::default(), &mut Vec::new())
}

/// CSV as the model wrote it (code fences removed), checked: a header and rows of the same width.
pub fn csv(text: &str) -> Result<(String, Vec<String>, usize), String> {
    let text = strip_fences(text);
    if text.trim().is_empty() {
        return Err("the answer is empty".into());
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let headers: Vec<String> =
        reader.headers().map_err(|e| format!("not CSV: {e}"))?.iter().map(str::to_owned).collect();
    if headers.is_empty() || headers.iter().all(|h| h.trim().is_empty()) {
        return Err("the CSV has no header row".into());
    }
    let mut rows = 0;
    for record in reader.records() {
        record.map_err(|e| format!("not CSV: {e}"))?;
        rows += 1;
    }
    Ok((text.to_owned(), headers, rows))
}

/// The text inside a markdown code fence, if the whole answer is one; else the text.
pub fn strip_fences(text: &str) -> &str {
    let trimmed = text.trim();
    let Some(rest) = trimmed.strip_prefix("```") else { return trimmed };
    let body = match rest.find('\n') {
        Some(newline) => &rest[newline + 1..],
        None => rest,
    };
    body.strip_suffix("```").unwrap_or(body).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_wraps_and_paginates_into_a_pdf() {
        let text = "# Minutes\n\n".to_owned() + &"The committee met and agreed on the budget. ".repeat(400);
        let bytes = pdf("Minutes", &text);
        assert!(bytes.starts_with(b"%PDF-"));
        assert!(wrap(&"word ".repeat(100), 20).iter().all(|l| l.chars().count() <= 20));
    }

    #[test]
    fn csv_is_checked_and_fences_removed() {
        let (text, headers, rows) = csv("```csv\nname,qty\napple,3\npear,5\n```").unwrap();
        assert_eq!(text, "name,qty\napple,3\npear,5");
        assert_eq!(headers, ["name", "qty"]);
        assert_eq!(rows, 2);
        assert!(csv("name,qty\napple,3,extra\n").is_err());
        assert!(csv("   ").is_err());
    }
}
