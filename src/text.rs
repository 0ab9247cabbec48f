//! Terminal-safe rendering of untrusted text.
//!
//! Everything that comes from the broker or from a message (queue names, headers, bodies, error
//! strings) is shown only through this module. It never emits a control character: C0 controls
//! become their Unicode "control pictures" (`ESC` → `␛`), DEL becomes `␡`, C1 controls and bidi /
//! invisible formatting characters become a visible `⟨U+XXXX⟩`, and invalid UTF-8 becomes `�`.
//! This is what stops a hostile message body from writing to the operator's clipboard (OSC 52),
//! retitling the window, clearing the screen or reversing the text on an incident screen.

use std::borrow::Cow;

/// Replacement shown where text was cut to fit a limit.
pub const ELLIPSIS: char = '…';

/// Is this a character that must never reach the terminal as-is?
fn is_dangerous(c: char) -> bool {
    let u = c as u32;
    c.is_control()                     // C0, DEL, C1
        || (0x200B..=0x200F).contains(&u) // zero-width, LRM/RLM
        || (0x202A..=0x202E).contains(&u) // bidi embeddings/overrides
        || (0x2060..=0x2064).contains(&u) // word joiner, invisible operators
        || (0x2066..=0x2069).contains(&u) // bidi isolates
        || u == 0xFEFF                      // BOM / ZWNBSP
        || u == 0x061C                      // Arabic letter mark
        || (0xFFF9..=0xFFFB).contains(&u) // interlinear annotations
}

fn push_visible(out: &mut String, c: char, keep_newlines: bool) {
    let u = c as u32;
    match c {
        '\n' if keep_newlines => out.push('\n'),
        '\t' if keep_newlines => out.push_str("    "),
        _ if u < 0x20 => out.push(char::from_u32(0x2400 + u).unwrap_or('?')),
        '\u{7f}' => out.push('␡'),
        _ => {
            out.push_str("⟨U+");
            out.push_str(&format!("{u:04X}"));
            out.push('⟩');
        }
    }
}

/// One line, safe to print: every control character (newlines included) made visible.
pub fn sanitize(input: &str) -> Cow<'_, str> {
    sanitize_inner(input, false)
}

/// Multi-line text, safe to print: newlines kept, tabs expanded, everything else made visible.
pub fn sanitize_multiline(input: &str) -> Cow<'_, str> {
    sanitize_inner(input, true)
}

fn sanitize_inner(input: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !input.chars().any(is_dangerous) {
        return Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len() + 16);
    for c in input.chars() {
        if is_dangerous(c) {
            push_visible(&mut out, c, keep_newlines);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes (a message body, a header) as one safe line; invalid UTF-8 becomes `�`.
pub fn sanitize_bytes(input: &[u8]) -> String {
    sanitize(&String::from_utf8_lossy(input)).into_owned()
}

/// A safe one-line preview of at most `max_chars` characters, reading at most `max_bytes` input
/// bytes (so a 10 MB body costs no more than its preview).
pub fn preview(input: &[u8], max_bytes: usize, max_chars: usize) -> String {
    let cut = input.len() > max_bytes;
    let slice = &input[..input.len().min(max_bytes)];
    let text = String::from_utf8_lossy(slice);
    let safe = sanitize(&text);
    let mut out: String = safe.chars().take(max_chars).collect();
    if cut || safe.chars().nth(max_chars).is_some() {
        out.pop();
        out.push(ELLIPSIS);
    }
    out
}

/// True if `s` contains nothing a terminal would interpret (used by tests and debug asserts).
pub fn is_terminal_safe(s: &str) -> bool {
    !s.chars().any(is_dangerous)
}

/// One status-bar line: `what happened — what to try`, both sanitised; just the first part when
/// there is no hint. The one format the console uses for every failure.
pub fn with_hint(message: &str, hint: &str) -> String {
    if hint.is_empty() {
        sanitize(message).into_owned()
    } else {
        format!("{} — {}", sanitize(message), sanitize(hint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "\x1b]52;c;aGVsbG8=\x07",                   // OSC 52 clipboard write
        "\x1b]0;pwned title\x07",                   // OSC 0 window title
        "\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\", // OSC 8 hyperlink
        "\x1b[2J",                                  // clear screen
        "\x1b[6n",                                  // cursor position report (answerback)
        "\x1bc",                                    // full reset
        "\u{9b}31m",                                // raw C1 CSI
        "invoice\u{202e}fdp.exe",                   // RTL override
        "a\u{2066}b\u{2069}c\u{200b}d",             // isolates, zero-width space
        "bell\x07del\x7fnul\x00",
    ];

    #[test]
    fn hostile_vectors_are_made_visible() {
        for v in HOSTILE {
            let s = sanitize(v);
            assert!(is_terminal_safe(&s), "unsafe output for {v:?}: {s:?}");
            assert!(!s.contains('\x1b') && !s.contains('\u{9b}') && !s.contains('\u{202e}'));
        }
        assert_eq!(sanitize("\x1b[2J"), "␛[2J");
        assert_eq!(sanitize("a\u{202e}b"), "a⟨U+202E⟩b");
        assert_eq!(sanitize("\u{9b}"), "⟨U+009B⟩");
        assert_eq!(sanitize("x\ny"), "x␊y");
        assert_eq!(sanitize_multiline("x\ny\x1b"), "x\ny␛");
    }

    #[test]
    fn clean_text_is_borrowed_unchanged() {
        assert!(matches!(sanitize("email.v2 → ok ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn invalid_utf8_becomes_replacement() {
        let s = sanitize_bytes(b"ok\xff\xfe\x1b]52;c;x\x07");
        assert!(s.starts_with("ok\u{fffd}\u{fffd}␛]52"));
        assert!(is_terminal_safe(&s));
    }

    #[test]
    fn ten_megabyte_body_preview_is_bounded() {
        let mut body = vec![b'A'; 10 * 1024 * 1024];
        body[5] = 0x1b;
        let p = preview(&body, 4096, 80);
        assert_eq!(p.chars().count(), 80);
        assert!(p.ends_with(ELLIPSIS));
        assert!(is_terminal_safe(&p));
    }
}
