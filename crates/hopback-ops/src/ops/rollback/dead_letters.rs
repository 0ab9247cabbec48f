//! The rollback's dead-letter step: count a version's dead letters, then replay them with the
//! mover, keep them, or export them.

use super::*;
use crate::broker::amqp::FieldTable;

// ───────────────────────────── dead letters ─────────────────────────────

/// Counts of a dead-letter pass.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DlqCounts {
    /// Dead letters of the origin seen.
    pub matched: u64,
    /// Replayed (confirmed at the target, removed from the DLQ).
    pub replayed: u64,
    /// Exported (written and synced, removed from the DLQ).
    pub exported: u64,
    /// Parked: over the replay limit, left in the DLQ.
    pub parked: u64,
    /// Of other origins, left in place.
    pub others: u64,
}

/// Dead letters in `NS.dlq` from `origin`: count them (browse) without changing anything.
pub async fn count_dead_letters(env: &Env, origin: &str) -> Result<(u64, u64), BrokerError> {
    let dlq = env.names().dlq;
    let depth = env.ready(&dlq).await?;
    if depth == 0 {
        return Ok((0, 0));
    }
    // Counting by origin browses the DLQ: the same fail-closed guard as the browser.
    let quorum = crate::broker::stats::browse_guard(env.mgmt.as_ref(), &dlq, false).await?;
    let msgs = crate::broker::browse::browse(
        &env.session,
        &dlq,
        crate::broker::browse::BrowseOptions {
            skip: 0,
            take: depth.min(10_000),
            max_body_bytes: 0,
            force: false,
        },
        quorum,
    )
    .await?;
    let matched = msgs
        .iter()
        .filter(|m| {
            origin_version(&env.names(), m.properties.headers().as_ref()).as_deref() == Some(origin)
        })
        .count() as u64;
    Ok((matched, depth))
}

pub(super) fn origin_version(ns: &Namespace, headers: Option<&FieldTable>) -> Option<String> {
    attribute(headers)
        .origin_queue
        .and_then(|q| ns.version_of_queue(&q))
}

/// Export the dead letters of `origin` losslessly (the purge's export-and-hold primitive:
/// every header with its type, the body in base64) and remove exactly those; the others stay.
async fn export_dead_letters(
    env: &Env,
    origin: &str,
    path: &std::path::Path,
) -> Result<DlqCounts, BrokerError> {
    let names = env.names();
    let quorum = crate::broker::stats::browse_guard(env.mgmt.as_ref(), &names.dlq, false).await?;
    let keep = |m: &crate::model::deadletter::MessageView| {
        m.attribution
            .origin_queue
            .as_deref()
            .and_then(|q| names.version_of_queue(q))
            .as_deref()
            == Some(origin)
    };
    let held = crate::broker::export::prepare_matching(
        env.session.clone(),
        &names.dlq,
        path,
        quorum,
        false,
        &keep,
    )
    .await?;
    let r = held.commit().await?;
    Ok(DlqCounts {
        matched: r.exported,
        exported: r.removed,
        ..Default::default()
    })
}

pub(super) async fn step_dlq(
    c: &StepCtx<'_>,
    origin: &str,
    to: &str,
    action: DlqChoice,
) -> StepResult {
    let env = c.env;
    let (matched, depth) = match count_dead_letters(env, origin).await {
        Ok(x) => x,
        Err(e) => return StepResult::failed(e),
    };
    if matched == 0 {
        return StepResult::already(format!(
            "no dead letters from {origin} ({depth} in the DLQ)"
        ));
    }
    let choice = match action {
        DlqChoice::Ask => {
            let d = c.ask(
                    DecisionKind::DlqChoice,
                    format!(
                        "{matched} dead letter(s) from {origin} in {}: replay to {}, keep, or export?",
                        crate::text::sanitize(&env.names().dlq),
                        env.queue(to)
                    ),
                    vec![format!("{depth} dead letter(s) in the DLQ, {matched} from {origin}")],
                ).await;
            match d {
                Decision::Choose(ch) => ch,
                Decision::Continue => DlqChoice::Replay,
                other => {
                    return from_decision(other).unwrap_or_else(|| StepResult::skipped("skipped"));
                }
            }
        }
        other => other,
    };
    let dst = env.queue(to);
    let export_path = crate::config::data_dir().join(format!(
        "export-{}-{}-{}.jsonl",
        env.ns,
        origin,
        chrono::Utc::now().format("%Y%m%dT%H%M%S")
    ));
    let result = match choice {
        DlqChoice::Keep => {
            return StepResult::done(
                format!("kept {matched} dead letter(s) from {origin} in the DLQ"),
                json!({"kept": matched}),
            );
        }
        DlqChoice::Export => export_dead_letters(env, origin, &export_path).await,
        DlqChoice::Replay | DlqChoice::Ask => {
            // Workers of the old version may still be finishing (and dead-lettering) tasks they
            // held when the gate flipped; repeat the pass until one finds nothing new.
            let mut total = DlqCounts::default();
            let mut res = Ok(total);
            // The origin's queue by name: the mover matches it whatever the adoption calls it.
            let filter = match Filter::parse(&[format!("origin={}", env.queue(origin))]) {
                Ok(f) => f,
                Err(e) => return StepResult::failed(e),
            };
            for pass in 0..5 {
                // Bound each pass by what is there now: a DLQ that keeps growing with other
                // origins' dead letters must not keep a pass going.
                let now_matched = if pass == 0 {
                    matched
                } else {
                    match count_dead_letters(env, origin).await {
                        Ok((m, _)) => m,
                        Err(e) => {
                            res = Err(e);
                            break;
                        }
                    }
                };
                if now_matched == 0 {
                    break;
                }
                let mut spec =
                    mover::MoveSpec::replay(&env.names(), mover::Target::Queue(dst.clone()));
                spec.limit = Some(now_matched);
                spec.filter = filter.clone();
                spec.connection_purpose = "rollback replay".into();
                let r = run_mover(c, &spec, Some(matched)).await;
                total.matched += r.counts.moved + r.counts.parked;
                total.replayed += r.counts.moved;
                total.parked += r.counts.parked;
                total.others = r.counts.skipped_by_filter;
                if r.failed() {
                    res = Err(BrokerError::Other(format!("replay stopped: {:?}", r.stop)));
                    break;
                }
                res = Ok(total);
                if r.counts.moved + r.counts.parked == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            res
        }
    };
    match result {
        Ok(k) if choice == DlqChoice::Export => StepResult::done(
            format!(
                "exported {} dead letter(s) to {}",
                k.exported,
                export_path.display()
            ),
            json!({"exported": k.exported, "file": export_path.display().to_string()}),
        ),
        Ok(k) => StepResult::done(
            format!(
                "replayed {} dead letter(s) from {origin} to {}{}",
                k.replayed,
                crate::text::sanitize(&dst),
                if k.parked > 0 {
                    format!(
                        "; {} parked in {} (replayed {MAX_REPLAYS}× already)",
                        k.parked,
                        env.names().parked
                    )
                } else {
                    String::new()
                }
            ),
            json!({"replayed": k.replayed, "parked": k.parked, "others": k.others}),
        ),
        Err(e) => StepResult::failed(e),
    }
}
