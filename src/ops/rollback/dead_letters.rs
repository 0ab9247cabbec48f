//! The rollback's dead-letter step: count a version's dead letters, then replay them with the
//! mover, keep them, or export them.

use super::*;
// The export choice still drives a channel itself (docs/architecture.md lists it as the
// known exception, to move onto `broker::export`).
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};

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
pub async fn count_dead_letters(env: &Env, origin: &str) -> Result<(u64, u64), String> {
    let dlq = env.names().dlq;
    let depth = env.ready(&dlq).await?;
    let msgs = crate::broker::browse::browse(
        &env.session,
        &dlq,
        crate::broker::browse::BrowseOptions {
            skip: 0,
            take: depth.min(10_000),
            max_body_bytes: 0,
            force: false,
        },
        false,
    )
    .await
    .map_err(|e| e.to_string())?;
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

/// One pass over the DLQ (as deep as it was at the start): dead letters of `origin` are replayed
/// to `dst` (with `x-hopback-replays` + 1) or exported to `export` and removed; everything else,
/// and anything over [`MAX_REPLAYS`], goes back in place.
pub async fn process_dead_letters(
    env: &Env,
    origin: &str,
    dst: &str,
    export: Option<&std::path::Path>,
    mut progress: impl FnMut(u64),
) -> Result<DlqCounts, String> {
    let session = &env.session;
    let dlq = env.names().dlq;
    let depth = env.ready(&dlq).await?;
    let mut counts = DlqCounts::default();
    if depth == 0 {
        return Ok(counts);
    }
    let pw = session.password().to_string();
    let cin = session.channel().await.map_err(|e| e.to_string())?;
    let cout = session.confirm_channel().await.map_err(|e| e.to_string())?;
    let prefetch = u16::try_from(depth.min(5_000)).unwrap_or(5_000);
    timed(
        "basic.qos",
        CALL_TIMEOUT,
        &pw,
        cin.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let tag = format!("hopback-dlq-{}", uuid::Uuid::new_v4());
    let mut consumer = timed(
        "basic.consume",
        CALL_TIMEOUT,
        &pw,
        cin.basic_consume(
            dlq.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut file = match export {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot open {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut put_back = Vec::new();
    let mut exported = Vec::new();
    let mut error = None;
    let mut seen = 0u64;
    while seen < depth.min(u64::from(prefetch)) {
        let d = match tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            _ => break,
        };
        seen += 1;
        let headers = d.properties.headers().clone();
        if origin_version(&env.names(), headers.as_ref()).as_deref() != Some(origin) {
            counts.others += 1;
            put_back.push(d);
            continue;
        }
        counts.matched += 1;
        let replays = header_u64(headers.as_ref(), REPLAYS_HEADER).unwrap_or(0);
        if let Some(f) = file.as_mut() {
            let line = json!({
                "message_id": d.properties.message_id().as_ref().map(|s| s.to_string()),
                "origin": origin,
                "replays": replays,
                "body": String::from_utf8_lossy(&d.data),
            });
            if writeln!(f, "{line}").is_err() {
                error = Some("cannot write the export file".to_string());
                put_back.push(d);
                break;
            }
            exported.push(d);
            continue;
        }
        if replays >= MAX_REPLAYS {
            counts.parked += 1;
            put_back.push(d);
            continue;
        }
        let mut h = headers.unwrap_or_default();
        h.insert(
            ShortString::from(REPLAYS_HEADER),
            AMQPValue::LongLongInt((replays + 1) as i64),
        );
        let props = d.properties.clone().with_headers(h);
        let ok = match timed(
            "basic.publish",
            CALL_TIMEOUT,
            &pw,
            cout.basic_publish(
                "".into(),
                dst.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &d.data,
                props,
            ),
        )
        .await
        {
            Ok(pc) => matches!(
                timed("publisher confirm", CALL_TIMEOUT, &pw, pc).await,
                Ok(Confirmation::Ack(None))
            ),
            Err(_) => false,
        };
        if !ok {
            error = Some(format!(
                "`{}` did not confirm a replayed message; stopped",
                crate::text::sanitize(dst)
            ));
            put_back.push(d);
            break;
        }
        match tokio::time::timeout(CALL_TIMEOUT, d.acker.ack(BasicAckOptions::default())).await {
            Ok(Ok(true)) => {
                counts.replayed += 1;
                progress(counts.replayed);
            }
            _ => {
                error = Some("an ack did not reach the broker; stopped (one dead letter may be replayed twice)".into());
                break;
            }
        }
    }
    if let Some(f) = file.as_mut() {
        if f.sync_all().is_ok() {
            for d in exported.drain(..) {
                if let Ok(Ok(true)) =
                    tokio::time::timeout(CALL_TIMEOUT, d.acker.ack(BasicAckOptions::default()))
                        .await
                {
                    counts.exported += 1;
                }
            }
        } else {
            error = Some("cannot sync the export file; nothing removed from the DLQ".into());
        }
    }
    for d in put_back.into_iter().chain(exported) {
        let _ = tokio::time::timeout(
            CALL_TIMEOUT,
            d.acker.nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            }),
        )
        .await;
    }
    let _ = timed(
        "basic.cancel",
        CALL_TIMEOUT,
        &pw,
        cin.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, cin.close(200, "done".into())).await;
    let _ = tokio::time::timeout(CALL_TIMEOUT, cout.close(200, "done".into())).await;
    match error {
        Some(e) => Err(e),
        None => Ok(counts),
    }
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
            let d = c
                .operator
                .decide(&c.point(
                    DecisionKind::DlqChoice,
                    format!(
                        "{matched} dead letter(s) from {origin} in {}.dlq: replay to {}, keep, or export?",
                        env.ns,
                        env.queue(to)
                    ),
                    vec![format!("{depth} dead letter(s) in the DLQ, {matched} from {origin}")],
                ))
                .await;
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
        DlqChoice::Export => {
            if let Some(dir) = export_path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            process_dead_letters(env, origin, &dst, Some(&export_path), |n| {
                c.progress(n, Some(matched))
            })
            .await
        }
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
                    res = Err(format!("replay stopped: {:?}", r.stop));
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
