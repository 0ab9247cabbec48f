//! The ASCII fallback: when the locale is not UTF-8 (`LC_ALL` / `LC_CTYPE` / `LANG` without
//! "UTF-8", or `HOPBACK_ASCII=1`), every cell of the finished frame is mapped to ASCII just before
//! it is flushed — box drawing to `-|+`, bars to `_.:-=#`, arrows to `<>^v`, marks to `x`/`!`,
//! anything else outside ASCII (a name in another script) to `?`. One pass over the buffer, so no
//! view needs to know.

use ratatui::buffer::Buffer;

/// Does the locale say UTF-8? (`HOPBACK_ASCII=1` forces the fallback.)
pub fn locale_is_utf8() -> bool {
    locale_is_utf8_from(|k| std::env::var(k).ok())
}

fn locale_is_utf8_from(get: impl Fn(&str) -> Option<String>) -> bool {
    if get("HOPBACK_ASCII").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return false;
    }
    // The first of these that is set and not empty decides (POSIX precedence).
    let locale = ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| get(k).filter(|v| !v.is_empty()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    locale.contains("utf-8") || locale.contains("utf8")
}

/// The ASCII stand-in of one symbol.
pub fn ascii_of(symbol: &str) -> &str {
    if symbol.is_ascii() {
        return symbol;
    }
    match symbol {
        "─" | "━" | "═" | "–" | "—" | "┄" => "-",
        "│" | "┃" | "║" => "|",
        "┌" | "┐" | "└" | "┘" | "├" | "┤" | "┬" | "┴" | "┼" | "╭" | "╮" | "╰" | "╯" => {
            "+"
        }
        "▁" => "_",
        "▂" | "▃" => ".",
        "▄" => ":",
        "▅" | "▆" => "=",
        "▇" | "█" => "#",
        "░" => ".",
        "·" | "•" => ".",
        "→" | "▶" | "»" => ">",
        "←" | "◀" | "«" => "<",
        "↑" => "^",
        "↓" => "v",
        "↔" => "=",
        "…" => "~",
        "✔" => "v",
        "✘" | "×" => "x",
        "⚠" => "!",
        "↷" => ">",
        "“" | "”" => "\"",
        "≥" => ">",
        "≤" => "<",
        "≠" => "#",
        "␛" => "^",
        _ => "?",
    }
}

/// Map every cell of `buf` to ASCII.
pub fn asciify(buf: &mut Buffer) {
    for cell in buf.content.iter_mut() {
        let sym = cell.symbol();
        if !sym.is_ascii() {
            let a = ascii_of(sym).to_string();
            cell.set_symbol(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn locale_detection_follows_posix_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(locale_is_utf8_from(env(&[("LANG", "en_US.UTF-8")])));
        assert!(locale_is_utf8_from(env(&[
            ("LC_ALL", "C.utf8"),
            ("LANG", "C")
        ])));
        assert!(!locale_is_utf8_from(env(&[
            ("LC_ALL", "C"),
            ("LANG", "en_US.UTF-8")
        ])));
        assert!(!locale_is_utf8_from(env(&[])));
        assert!(locale_is_utf8_from(env(&[
            ("LC_ALL", ""),
            ("LANG", "de_DE.UTF-8")
        ])));
        assert!(!locale_is_utf8_from(env(&[
            ("LANG", "en_US.UTF-8"),
            ("HOPBACK_ASCII", "1")
        ])));
    }

    #[test]
    fn every_glyph_the_views_use_has_an_ascii_stand_in() {
        for g in
            "· — → … █ ↓ ↑ ⚠ – ✘ ▁ ░ × ✔ ▅ ▶ ↔ ← ▇ ▃ ▂ ≥ ≤ ” “ ◀ ▆ ▄ ␛ ≠ ↷ • ─ │ ┌ ┐ └ ┘".split(' ')
        {
            assert_ne!(ascii_of(g), "?", "{g} has no stand-in");
            assert!(ascii_of(g).is_ascii());
        }
        assert_eq!(ascii_of("é"), "?");
        assert_eq!(ascii_of("a"), "a");
    }
}
