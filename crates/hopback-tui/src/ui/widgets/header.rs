//! The header line: profile, broker (host:port and vhost — never credentials), server version,
//! connection state or "stale 12 s — reconnecting (attempt 3)", data age, the metrics source
//! (`metrics prometheus`, or "rates unknown"), badges — among them
//! "broker blocked: memory alarm" while a resource alarm holds publishers, so an operation that
//! waits is explained on screen rather than looking hung.

use ratatui::text::{Line, Span};

use crate::app::state::AppState;
use crate::text::sanitize;
use crate::ui::theme::Theme;

/// The header as one line, dropping the least important parts (a cluster profile's node count,
/// the server version, then the product name) when `width` is too small, so the connection
/// state and a cluster's down nodes always show.
pub fn header(state: &AppState, theme: &Theme, width: usize) -> Line<'static> {
    for level in 0..4 {
        let line = build(state, theme, level);
        if line.width() <= width {
            return line;
        }
    }
    build(state, theme, 4)
}

/// `level` 0 = everything; 1 = no "(of 3 nodes)" after the node in use; 2 = no server version
/// either; 3 = no product name; 4 = no profile name.
fn build(state: &AppState, theme: &Theme, level: u8) -> Line<'static> {
    let (with_name, with_version, with_profile) = (level < 3, level < 2, level < 4);
    let broker = if level < 1 {
        state.broker_label()
    } else {
        state.broker.clone()
    };
    let mut spans = Vec::new();
    if with_name {
        spans.push(Span::styled(" hopback ", theme.header));
    }
    if state.production {
        spans.push(Span::styled(
            if level < 4 { " PRODUCTION " } else { " PROD " },
            theme.badge_production,
        ));
        spans.push(Span::raw(" "));
    }
    if state.read_only {
        spans.push(Span::styled(
            if level < 4 { " READ-ONLY " } else { " RO " },
            theme.badge_read_only,
        ));
        spans.push(Span::raw(" "));
    }
    let vhost = if state.vhost == "/" {
        String::new()
    } else {
        format!(" vhost {}", sanitize(&state.vhost))
    };
    spans.push(Span::styled(
        if with_profile {
            format!(
                "{} · {}{vhost}",
                sanitize(&state.profile),
                sanitize(&broker)
            )
        } else {
            format!("{}{vhost}", sanitize(&broker))
        },
        theme.base,
    ));
    if let Some(v) = state
        .snapshot
        .as_ref()
        .filter(|_| with_version)
        .and_then(|s| s.server_version.as_deref())
    {
        spans.push(Span::styled(
            format!(" · RabbitMQ {}", sanitize(v)),
            theme.muted,
        ));
    }
    spans.push(Span::raw(" · "));
    let label = state.conn_label();
    if let Some(since) = state.paused_since_ms {
        // Paused on purpose: say since when and what is held, never "stale".
        spans.push(Span::styled(
            format!(
                "PAUSED {} · {} refresh(es) held · {} resumes",
                super::age((state.now_ms - since).max(0)),
                state.held_count,
                state.keymap.first_key("pause_live")
            ),
            theme.warn,
        ));
    } else if state.is_stale() || !state.conn.is_live() {
        spans.push(Span::styled(label, theme.alert));
    } else {
        spans.push(Span::styled(label, theme.ok));
        if let Some(a) = state.data_age_ms() {
            spans.push(Span::styled(
                format!(" · data {}", super::age(a)),
                theme.muted,
            ));
        }
    }
    if let Some(blocked) = state.blocked_label() {
        spans.push(Span::raw(" · "));
        spans.push(Span::styled(blocked, theme.alert));
    }
    if let Some(nodes) = state
        .snapshot
        .as_ref()
        .and_then(|s| s.nodes.as_ref())
        .filter(|n| n.len() > 1)
    {
        // A cluster: how many nodes run, which are down, and any partition.
        let down: Vec<String> = nodes
            .iter()
            .filter(|n| !n.running)
            .map(|n| sanitize(&n.name).into_owned())
            .collect();
        let partitioned = nodes.iter().any(|n| !n.partitions.is_empty());
        let mut text = format!(" · {} nodes", nodes.len());
        if !down.is_empty() {
            text.push_str(&format!(", {} DOWN ({})", down.len(), down.join(", ")));
        }
        if partitioned {
            text.push_str(", PARTITIONED");
        }
        let style = if down.is_empty() && !partitioned {
            theme.muted
        } else {
            theme.alert
        };
        spans.push(Span::styled(text, style));
    }
    if let Some(snap) = &state.snapshot {
        // Where the rates come from (the first thing a narrow header drops) — or that they are
        // unknown (never dropped: unknown must not pass for 0).
        match (snap.mgmt_available, snap.metrics_source) {
            (false, None) => spans.push(Span::styled(
                " · no mgmt API: gate and rates unknown",
                theme.warn,
            )),
            (false, Some(_)) => {
                spans.push(Span::styled(" · no mgmt API: gate unknown", theme.warn))
            }
            (true, None) => spans.push(Span::styled(" · rates unknown", theme.warn)),
            (true, Some(_)) => {}
        }
        if let Some(src) = snap.metrics_source.filter(|_| level == 0) {
            spans.push(Span::styled(format!(" · metrics {src}"), theme.muted));
        }
    }
    if let Some(d) = &state.tap.down {
        spans.push(Span::styled(
            format!(" · tap down: {}", sanitize(d)),
            theme.warn,
        ));
    }
    Line::from(spans)
}
