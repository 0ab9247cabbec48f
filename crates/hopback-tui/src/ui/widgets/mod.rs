//! Small building blocks shared by the views: number formatting, text sparklines, the gate bar,
//! the header and the status line.

pub mod gatebar;
pub mod header;
pub mod spark;
pub mod status;

/// Draw a section heading (a top border carrying `title`) over `area` and return the area
/// below it — the frame every view's panels share.
pub fn section(
    f: &mut ratatui::Frame,
    area: ratatui::layout::Rect,
    title: impl Into<String>,
    theme: &crate::ui::theme::Theme,
) -> ratatui::layout::Rect {
    let title = ratatui::text::Span::styled(title.into(), theme.title);
    section_with(f, area, ratatui::widgets::Borders::TOP, theme.border, title)
}

/// [`section`] with its own borders, border style and (styled) title.
pub fn section_with<'a>(
    f: &mut ratatui::Frame,
    area: ratatui::layout::Rect,
    borders: ratatui::widgets::Borders,
    border_style: ratatui::style::Style,
    title: impl Into<ratatui::text::Line<'a>>,
) -> ratatui::layout::Rect {
    let block = ratatui::widgets::Block::default()
        .borders(borders)
        .border_style(border_style)
        .title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    inner
}

/// `1234` → `1234`, `12345` → `12.3k`, `1234567` → `1.2M`; `None` → `?` (unknown, not zero —
/// as `hopback status` prints it).
pub fn count(n: Option<u64>) -> String {
    match n {
        None => "?".into(),
        Some(n) if n < 10_000 => n.to_string(),
        Some(n) if n < 1_000_000 => format!("{:.1}k", n as f64 / 1000.0),
        Some(n) => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

/// A rate per second: `0`, `3.2`, `45`, `1.2k`; `None` → `?` (unknown).
pub fn rate(r: Option<f64>) -> String {
    match r {
        None => "?".into(),
        Some(r) if r <= 0.0 => "0".into(),
        Some(r) if r < 10.0 => format!("{r:.1}"),
        Some(r) if r < 10_000.0 => format!("{r:.0}"),
        Some(r) => format!("{:.1}k", r / 1000.0),
    }
}

/// An error ratio 0..1 as percent: `0.0`, `12.5`, `100`; `None` → `–` (no traffic to measure, as
/// `hopback status` prints `-`).
pub fn pct(r: Option<f64>) -> String {
    match r {
        None => "–".into(),
        Some(r) if r >= 0.9995 => "100".into(),
        Some(r) => format!("{:.1}", r * 100.0),
    }
}

/// A version's error rate as [`pct`] shows it, with `?` where it is unknown (no metrics source,
/// not enough readings yet) rather than `–` (no traffic): unknown is never "no traffic".
pub fn err_pct(v: Option<&crate::model::snapshot::VersionSnapshot>) -> String {
    use crate::model::snapshot::ErrorState;
    match v.map(|v| v.error_state()) {
        Some(ErrorState::Ratio(r)) => pct(Some(r)),
        Some(ErrorState::NoTraffic) => pct(None),
        Some(ErrorState::Unknown) => "?".into(),
        None => pct(None),
    }
}

/// An age in ms as `0.4 s`, `12 s`, `3 m`, `2 h`.
pub fn age(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 120_000 {
        format!("{} s", ms / 1000)
    } else if ms < 7_200_000 {
        format!("{} m", ms / 60_000)
    } else {
        format!("{} h", ms / 3_600_000)
    }
}

/// Cut `s` to `max` display characters with `…`.
pub fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push(crate::text::ELLIPSIS);
    out
}

/// Cut `s` to `max` display characters keeping its end, with a leading `…` — for ids whose
/// distinguishing part is the suffix (`drill-ab12cd-0000137`).
pub fn fit_tail(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let mut out = String::from(crate::text::ELLIPSIS);
    out.extend(s.chars().skip(n - max.saturating_sub(1)));
    out
}

/// Break `s` at spaces into lines of at most `width` characters, at most `max_lines` of them
/// (the last one cut with `…` when more is left): for a message that must be read whole, such
/// as a refusal naming what holds a lock.
pub fn wrap(s: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        let (cur_n, word_n) = (cur.chars().count(), word.chars().count());
        if cur_n > 0 && cur_n + 1 + word_n > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
        // A word longer than the line is cut into pieces.
        while cur.chars().count() > width {
            let head: String = cur.chars().take(width).collect();
            cur = cur.chars().skip(width).collect();
            lines.push(head);
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    if lines.len() > max_lines {
        let rest = lines.split_off(max_lines.saturating_sub(1)).join(" ");
        lines.push(fit(&rest, width));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_bounds_the_lines() {
        assert_eq!(wrap("aa bb cc", 5, 3), vec!["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh", 3, 5), vec!["abc", "def", "gh"]);
        let w = wrap("one two three four five six", 9, 2);
        assert_eq!(w.len(), 2);
        assert!(w[1].ends_with(crate::text::ELLIPSIS), "{w:?}");
        assert!(w.iter().all(|l| l.chars().count() <= 9), "{w:?}");
    }

    #[test]
    fn formats() {
        assert_eq!(count(None), "?");
        assert_eq!(rate(None), "?");
        assert_eq!(pct(None), "–");
        assert_eq!(count(Some(12_345)), "12.3k");
        assert_eq!(rate(Some(0.25)), "0.2");
        assert_eq!(pct(Some(0.125)), "12.5");
        assert_eq!(pct(Some(1.0)), "100");
        assert_eq!(age(12_400), "12 s");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit_tail("abcdef", 4), "…def");
        assert_eq!(fit_tail("abc", 4), "abc");
    }
}
