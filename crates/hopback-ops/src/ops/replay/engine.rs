//! The engine of a replay (docs/architecture.md, "The path of one replay"): which engine runs a
//! move and why ([`choose_engine`]: the broker engine wherever every per-message decision can be
//! made inside the broker, the client mover otherwise), the broker engine's plan (its refusals,
//! the replay-loop guard read from the ledger, the origin router) and its run.

use super::*;
use crate::broker::shovel::FoundMove;

/// Run a plan's shovel: declare the origin router when it replays to origin, then let
/// `broker::shovel` declare, watch and remove the shovel, forwarding its progress.
pub(super) async fn run_broker(
    cx: &OpContext,
    plan: &ReplayPlan,
    m: &ShovelMove,
    control: &ReplayControl,
    on_progress: &mut (impl FnMut(usize, &MoveProgress) + Send),
) -> crate::broker::shovel::ShovelOutcome {
    let failed = |why: String| crate::broker::shovel::ShovelOutcome {
        counts: MoveCounts::default(),
        stop: StopReason::Failed(why),
        exact: true,
    };
    let Some(mgmt) = cx.mgmt.as_ref() else {
        return failed("the management API is not configured".into());
    };
    let ns = Namespace::resolve(&cx.cfg, &plan.namespace);
    if m.dest
        == (ShovelDest::Exchange {
            name: ns.origin_router(),
        })
    {
        let queues = match mgmt.namespace_queues(&ns).await {
            Ok(q) => q,
            Err(e) => return failed(format!("cannot list the version queues: {e}")),
        };
        let versions = ns.versions_among(queues.iter().map(|q| q.name.as_str()));
        if let Err(e) =
            crate::broker::shovel::declare_origin_router(&cx.session, &ns, &versions).await
        {
            return failed(format!("cannot declare the origin router: {e}"));
        }
    }
    let fut = crate::broker::shovel::run(
        &cx.session,
        &cx.cfg.profile,
        &cx.cfg.operator,
        mgmt,
        m,
        &control.mover,
    );
    let mut r = with_progress(fut, control, 1, on_progress).await;
    if r.stop == StopReason::BudgetReached && plan.specs.first().is_some_and(|s| s.limit.is_some())
    {
        r.stop = StopReason::LimitReached;
    }
    r
}

/// Why the broker engine cannot run this move, if it cannot (the first reason found), and the
/// shovel it would run otherwise.
async fn broker_engine(
    cx: &OpContext,
    ns: &Namespace,
    req: &ReplayRequest,
    specs: &[MoveSpec],
    count: u64,
    moves: &Result<Vec<FoundMove>, String>,
) -> Result<ShovelMove, String> {
    let spec = specs.first().ok_or("nothing to move")?;
    if matches!(req.selection, Selection::Ids(_)) {
        return Err("selected messages are picked one by one".into());
    }
    if !spec.filter.is_empty() {
        return Err("a filter decides per message".into());
    }
    if req.rate_per_s.is_some() {
        return Err("--rate paces each message".into());
    }
    if let Source::Version(_) = req.from {
        return Err(
            "a drain runs until the queue stays empty; a shovel moves a fixed count".into(),
        );
    }
    if req.from == Source::Parked && !req.force {
        return Err(
            "parked messages are over the replay limit: only the client engine leaves them (or add --force)"
                .into(),
        );
    }
    if count == 0 {
        return Err("nothing to move".into());
    }
    let mgmt = cx
        .mgmt
        .as_ref()
        .ok_or("a shovel is declared through the management API, which is not configured")?;
    let who = mgmt
        .whoami()
        .await
        .map_err(|e| format!("cannot read who I am from the management API: {e}"))?;
    let admin = match &who.tags {
        serde_json::Value::Array(a) => a.iter().any(|t| t == "administrator"),
        serde_json::Value::String(t) => t.split(',').any(|t| t.trim() == "administrator"),
        _ => false,
    };
    if !admin {
        return Err(format!(
            "a shovel acts inside the broker with more than user `{}`'s own permissions: only an administrator may run one",
            sanitize(&who.name)
        ));
    }
    crate::broker::shovel::check_available(mgmt).await?;
    // RabbitMQ's shovel can remove itself (src-delete-after) before its last acks have settled
    // on a quorum source (rabbitmq-server#14636). Measured here on 3.10.8: 651 of 1,003
    // forwarded dead letters were back in the quorum DLQ; never on 4.0.5 nor from classic
    // sources. So: a quorum (or unknown-type) source takes the broker engine on 4.x only.
    let version = mgmt
        .overview()
        .await
        .map(|o| o.rabbitmq_version)
        .unwrap_or_default();
    if crate::broker::stats::major_version(&version).unwrap_or(0) < 4 {
        let kind = mgmt
            .queue(&spec.source_queue)
            .await
            .ok()
            .flatten()
            .map(|q| q.kind);
        if kind.as_deref() != Some("classic") {
            return Err(format!(
                "RabbitMQ {} may end a shovel before a quorum queue has settled its last acks (rabbitmq-server#14636), leaving moved messages in `{}` too; the broker engine takes a quorum source on 4.x",
                if version.is_empty() {
                    "3.x".to_string()
                } else {
                    sanitize(&version).into_owned()
                },
                sanitize(&spec.source_queue)
            ));
        }
    }
    // What earlier moves left behind, `run` removes first; a move still watched (or one whose
    // owner cannot be known) keeps the broker engine out.
    let running: Vec<String> = moves
        .as_ref()
        .map_err(Clone::clone)?
        .iter()
        .filter(|f| !matches!(f.verdict, crate::broker::shovel::Verdict::Stale(_)))
        .map(|f| sanitize(&f.name).into_owned())
        .collect();
    if !running.is_empty() {
        return Err(format!(
            "a broker-engine move of `{}` is still running (shovel `{}`)",
            sanitize(&ns.name),
            running.join("`, `")
        ));
    }
    if spec.count_replay && spec.park_queue.is_some() && !req.force {
        let earlier = earlier_replays(cx, ns).await?;
        if earlier >= u64::from(req.max_replays) {
            return Err(format!(
                "the ledger shows {earlier} earlier replay(s) of `{}`: a message may be at the limit of {}, which only the client engine checks per message",
                sanitize(&ns.name),
                req.max_replays
            ));
        }
    }
    let counts_deaths = crate::broker::shovel::broker_counts_republished_deaths(&version);
    let move_id = crate::broker::shovel::new_move_id();
    // Sender-selected routing (`CC`/`BCC`) must find nothing but the target: a queue through the
    // move's own fanout, an exchange only where its type ignores the extra keys
    // (`broker::republish`), "to origin" through the headers router.
    let (dest, park_queue) = match &spec.target {
        Target::Queue(q) => (
            ShovelDest::Queue {
                queue: q.clone(),
                via: ns.move_exchange(&move_id),
            },
            None,
        ),
        Target::Exchange(x) => {
            crate::broker::republish::exchange_ignores_sender_routing(mgmt, x).await?;
            (ShovelDest::Exchange { name: x.clone() }, None)
        }
        Target::Origin => (
            ShovelDest::Exchange {
                name: ns.origin_router(),
            },
            Some(ns.parked.clone()),
        ),
    };
    let time_limit = req
        .time_limit
        .unwrap_or_else(|| crate::broker::shovel::default_time_limit(count));
    Ok(ShovelMove {
        name: String::new(),
        move_id,
        vhost: cx.cfg.profile.vhost.clone(),
        source_queue: spec.source_queue.clone(),
        dest,
        count,
        prefetch: req.prefetch.clamp(1, 1000),
        park_queue,
        forward_headers: !counts_deaths,
        time_limit_s: time_limit.as_secs().max(1),
        deadline_unix: 0,
    })
}

/// The replay-loop guard of the broker engine, decided before it starts: how many replays of
/// this namespace the ledger holds. A hopback replay moves each message at most once (the
/// client's run marker, the shovel's fixed count), so a message in the DLQ has been replayed
/// by hopback at most this many times; below the limit no message can be at it. Refused (`Err`)
/// when the ledger cannot prove it holds the namespace's whole history: no verified `init`
/// event of the namespace (created before, adopted, or trimmed away), or a local-file ledger.
async fn earlier_replays(cx: &OpContext, ns: &Namespace) -> Result<u64, String> {
    if !cx.ledger.is_stream() {
        return Err(
            "the ledger is a local file, which cannot hold other operators' replays".into(),
        );
    }
    let mut replays = 0u64;
    let mut created = false;
    let fold = cx.ledger.fold(crate::ledger::StreamStart::First, |e| {
        if e.namespace.as_deref() != Some(ns.name.as_str()) {
            return;
        }
        match e.kind {
            EventKind::Init if e.author.is_some() && e.outcome == Outcome::Ok => created = true,
            EventKind::Replay if e.outcome == Outcome::Started => replays += 1,
            EventKind::RollbackStarted => replays += 1,
            _ => {}
        }
    });
    match tokio::time::timeout(std::time::Duration::from_secs(15), fold).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(format!(
                "cannot read the ledger to count earlier replays: {e}"
            ));
        }
        Err(_) => return Err("the ledger took too long to read to count earlier replays".into()),
    }
    if !created {
        return Err(format!(
            "the ledger does not hold `{}`'s creation (`hopback init`), so its earlier replays cannot all be counted",
            sanitize(&ns.name)
        ));
    }
    Ok(replays)
}

pub(super) async fn choose_engine(
    cx: &OpContext,
    ns: &Namespace,
    req: &ReplayRequest,
    specs: &[MoveSpec],
    count: u64,
    moves: &Result<Vec<FoundMove>, String>,
) -> Result<(Engine, String), OpError> {
    if req.engine == EngineChoice::Client {
        return Ok((Engine::Client, "asked for (--engine client)".into()));
    }
    match broker_engine(cx, ns, req, specs, count, moves).await {
        Ok(m) => {
            let why = if req.engine == EngineChoice::Broker {
                "asked for (--engine broker)".to_string()
            } else {
                "every decision can be made inside the broker".to_string()
            };
            Ok((Engine::Broker(m), why))
        }
        Err(why) if req.engine == EngineChoice::Broker => Err(OpError::refused(
            format!("the broker engine cannot run this move: {why}"),
            "use --engine client (or auto, which picks it)",
        )),
        Err(why) => Ok((Engine::Client, why)),
    }
}
