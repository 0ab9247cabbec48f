//! A text sparkline (`▁▂▃▅▇`) that fits in a table cell, scaled to the series' own maximum or to
//! a scale shared by several series (one namespace's versions: a queue bouncing 0↔1 must not look
//! as tall as a 1,100 backlog beside it).

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` values as a sparkline; all-zero series show a flat `▁` line, and missing
/// history is left blank on the left.
pub fn sparkline(values: &[f64], width: usize) -> String {
    sparkline_to(values, width, tail_max(values, width))
}

/// The smallest depth scale a sparkline is drawn on: a queue that bounces 0↔1 (a message at a
/// time going through) stays on the floor instead of drawing full-height bars that read as a
/// backlog. The scale label still shows the real maximum.
pub const DEPTH_SCALE_FLOOR: f64 = 10.0;

/// The scale a depth sparkline is drawn on: `max`, but never below [`DEPTH_SCALE_FLOOR`].
pub fn depth_scale(max: f64) -> f64 {
    max.max(DEPTH_SCALE_FLOOR)
}

/// The largest of the last `width` values (what a sparkline of that width shows); 0 if none.
pub fn tail_max(values: &[f64], width: usize) -> f64 {
    values[values.len().saturating_sub(width)..]
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
}

/// The last `width` values as a sparkline on the scale `0..=max` (a shared scale: values above
/// `max` are drawn full).
pub fn sparkline_to(values: &[f64], width: usize, max: f64) -> String {
    if width == 0 {
        return String::new();
    }
    let tail = &values[values.len().saturating_sub(width)..];
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

    #[test]
    fn a_shared_scale_keeps_small_series_small() {
        // 0↔1 beside a backlog of 1,100: on the shared scale it stays on the floor.
        assert_eq!(sparkline_to(&[0.0, 1.0, 0.0, 1.0], 4, 1100.0), "▁▁▁▁");
        assert_eq!(sparkline_to(&[550.0, 1100.0], 2, 1100.0), "▅█");
        assert_eq!(tail_max(&[5000.0, 1.0, 2.0], 2), 2.0);
        assert_eq!(tail_max(&[], 4), 0.0);
    }

    #[test]
    fn a_queue_bouncing_between_0_and_1_stays_low() {
        let bounce = [0.0, 1.0, 0.0, 1.0];
        let s = sparkline_to(&bounce, 4, depth_scale(tail_max(&bounce, 4)));
        assert!(!s.contains('█') && !s.contains('▇'), "{s}");
        // A real backlog still uses the full height.
        let backlog = [0.0, 400.0];
        assert_eq!(
            sparkline_to(&backlog, 2, depth_scale(tail_max(&backlog, 2))),
            "▁█"
        );
    }
}
