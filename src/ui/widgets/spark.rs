//! A text sparkline (`▁▂▃▅▇`) that fits in a table cell, scaled to the series' own maximum.

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` values as a sparkline; all-zero series show a flat `▁` line, and missing
/// history is left blank on the left.
pub fn sparkline(values: &[f64], width: usize) -> String {
    if width == 0 {
        return String::new();
    }
    let tail = &values[values.len().saturating_sub(width)..];
    let max = tail.iter().copied().fold(0.0_f64, f64::max);
    let mut out = " ".repeat(width - tail.len());
    for v in tail {
        let idx = if max <= 0.0 || !v.is_finite() {
            0
        } else {
            (((v / max) * 7.0).round() as usize).min(7)
        };
        out.push(BARS[idx]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_pads() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0], 5), "  ▁▅█");
        assert_eq!(sparkline(&[0.0, 0.0], 2), "▁▁");
        assert_eq!(sparkline(&[1.0; 10], 3).chars().count(), 3);
    }
}
