//! Terminal-safe rendering of untrusted text.
//!
//! Everything that comes from the broker or from a message (queue names, headers, bodies, error
//! strings) is shown only through this module. It never emits a control character: C0 controls
//! become their Unicode "control pictures" (`ESC` → `␛`), DEL becomes `␡`, C1 controls and bidi /
//! invisible formatting characters become a visible `⟨U+XXXX⟩`, and invalid UTF-8 becomes `�`.
//! This is what stops a hostile message body from writing to the operator's clipboard (OSC 52),
//! retitling the window, clearing the screen or reversing the text on an incident screen.

use std::borrow::Cow;

/// Write human output to stdout — what `crate::outln!` / `crate::out!` expand to, the CLI's only
/// `println!`/`print!`. Safe by construction: the whole formatted text goes through
/// [`sanitize_multiline`] (the program's newlines survive; any control or bidi character an
/// interpolated value carries is made visible), so no call site can forget. A closed pipe —
/// `hopback dlq list NS | head -1` — ends the process quietly with exit 0 instead of a panic;
/// other write errors are ignored (a terminal gone after SIGHUP must not replace the command's own
/// exit code).
pub fn write_out(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let text = std::fmt::format(args);
    let safe = sanitize_multiline(&text);
    let mut out = std::io::stdout().lock();
    let r = out
        .write_all(safe.as_bytes())
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = r
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Write human text to stderr, sanitised like [`write_out`] — what `crate::errln!` expands to.
/// A closed or gone stderr is ignored (never a panic).
pub fn write_err(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let text = std::fmt::format(args);
    let safe = sanitize_multiline(&text);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(safe.as_bytes());
    if newline {
        let _ = err.write_all(b"\n");
    }
    let _ = err.flush();
}

/// Redraw a one-line progress indicator on stderr in place (`\r`, clear line): the one place
/// the program writes its own escape sequence; the line itself is sanitised.
pub fn progress_line(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{}", sanitize(line));
    let _ = err.flush();
}

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
        || u == 0x2028 || u == 0x2029        // line / paragraph separators
        || u == 0x00AD                      // soft hyphen
        || u == 0x180E                      // Mongolian vowel separator
        || (0x206A..=0x206F).contains(&u) // deprecated format characters
        || (0xFE00..=0xFE0F).contains(&u) // variation selectors
        || (0xE0100..=0xE01EF).contains(&u) // variation selectors supplement
        || (0xE0000..=0xE007F).contains(&u) // tag characters
        || matches!(u, 0x115F | 0x1160 | 0x3164 | 0xFFA0) // Hangul fillers
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
        "line\u{2028}para\u{2029}",       // line / paragraph separators
        "soft\u{ad}hyphen\u{180e}",       // soft hyphen, Mongolian vowel separator
        "dep\u{206a}\u{206f}",            // deprecated format characters
        "vs\u{fe0f}\u{e0100}\u{e01ef}",   // variation selectors
        "tag\u{e0001}\u{e0041}\u{e007f}", // tag characters
        "fill\u{115f}\u{1160}\u{3164}\u{ffa0}", // Hangul fillers
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

/// One Markdown table cell, safe: sanitised to one line, `|` escaped, and a leading `#`, `>`,
/// `-`, `+`, `*` or `=` (which could start a heading, quote or list where a field begins a line)
/// escaped with a backslash, so a hostile field cannot break the table or the document.
pub fn md_cell(input: &str) -> String {
    let one_line = sanitize(input);
    let mut out = String::with_capacity(one_line.len() + 4);
    for (i, c) in one_line.chars().enumerate() {
        match c {
            '|' => out.push_str("\\|"),
            '#' | '>' | '-' | '+' | '*' | '=' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// JSON text safe to print: C1 controls and bidi / invisible characters (which `serde_json`
/// leaves raw inside strings) written as `\uXXXX` escapes. Only string contents can hold them,
/// so the result is the same JSON value.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    let risky = |c: char| c != '\n' && is_dangerous(c);
    if !json.chars().any(risky) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if risky(c) {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn markdown_cells_cannot_break_a_table() {
        assert_eq!(md_cell("a|b"), "a\\|b");
        assert_eq!(md_cell("# title"), "\\# title");
        assert_eq!(md_cell("x\ny"), "x␊y");
        assert!(!md_cell("`rm -rf`|\x1b[2J").contains('\x1b'));
        assert_eq!(md_cell("`code`"), "`code`");
    }

    #[test]
    fn json_escapes_c1_and_bidi_and_stays_the_same_value() {
        let v = serde_json::json!({"name": "evil\u{9b}31m\u{202e}txt\u{e0041}"});
        let text = serde_json::to_string_pretty(&v).unwrap();
        let safe = json_safe(&text);
        assert!(
            safe.contains("\\u009b") && safe.contains("\\u202e"),
            "{safe}"
        );
        assert!(is_terminal_safe(&safe.replace('\n', "")), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
    }
}

/// `MESSAGE (hint: HINT)`: how an error with a hint prints (`Failure`, `ConfigError`).
pub fn write_with_hint(
    f: &mut std::fmt::Formatter<'_>,
    message: &str,
    hint: Option<&str>,
) -> std::fmt::Result {
    f.write_str(message)?;
    match hint {
        Some(h) => write!(f, " (hint: {h})"),
        None => Ok(()),
    }
}

/// `println!` for human output, through [`write_out`] (sanitised; a closed pipe exits 0).
#[macro_export]
macro_rules! outln {
    () => { $crate::text::write_out(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::text::write_out(format_args!($($arg)*), true) };
}

/// `print!` for human output, through [`write_out`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::text::write_out(format_args!($($arg)*), false) };
}

/// `eprintln!` for human output, through [`write_err`] (sanitised; a gone stderr is ignored).
#[macro_export]
macro_rules! errln {
    () => { $crate::text::write_err(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::text::write_err(format_args!($($arg)*), true) };
}

/// `eprint!` for human output (a prompt), through [`write_err`].
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::text::write_err(format_args!($($arg)*), false) };
}
