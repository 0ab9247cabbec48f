//! The gate lock says what holds it (issue 31, item 5), against the real broker:
//! - a squatting `NS.gate-lock` (durable, declared from another connection): `gate set` is
//!   refused at once naming it (durable, not exclusive, no owner) and the way out; `status NS`
//!   and `check` show it; `gate unlock NS` without a terminal is refused (exit 3) and removes
//!   nothing; `gate unlock NS --yes` removes it, journaled (visible in the timeline); then
//!   `gate set` works;
//! - an exclusive lock held by another program's connection: the refusal names that connection
//!   and its user; `gate unlock --yes` alone is refused (it would close a connection it does not
//!   name); a live hopback flip's lock is not removed either; `--owner CONNECTION` frees it by
//!   closing that connection, journaled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::TestNs;
use common::record;
use hopback::broker::mgmt::Mgmt;
use hopback::broker::topology::QueueType;
use hopback::ledger::{self, EventKind, Ledger, Outcome, StreamStart};
use hopback::model::gate::GateSplit;
use hopback::model::gate_lock::LockKind;
use hopback::ops::gate;
use hopback::topology::Namespace;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;

struct Env {
    t: TestNs,
    stream: String,
    dir: tempfile::TempDir,
    mgmt: Mgmt,
    lock: String,
}

async fn setup(prefix: &str) -> Env {
    let t = TestNs::new(prefix, &["v1", "v2"], QueueType::Classic).await;
    let stream = format!("t-lock-ledger-{}", uuid::Uuid::new_v4().simple());
    let mgmt = Mgmt::new(&t.cfg.profile).unwrap();
    let lock = Namespace::resolve(&t.cfg, &t.ns).gate_lock();
    Env {
        t,
        stream,
        dir: tempfile::tempdir().unwrap(),
        mgmt,
        lock,
    }
}

impl Env {
    async fn run(&self, args: &[&str]) -> Output {
        let mut c = common::bin();
        c.env("HOPBACK_LEDGER_STREAM", &self.stream)
            .env("HOPBACK_DATA_DIR", self.dir.path())
            .env("HOPBACK_LOG_FILE", self.dir.path().join("hopback.log"))
            .args(args)
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }
    async fn gate(&self) -> GateSplit {
        gate::read_gate(&self.t.session, &self.mgmt, &self.t.cfg, &self.t.ns, &[])
            .await
            .unwrap()
            .split
    }
    async fn lock_exists(&self) -> bool {
        self.mgmt.queue(&self.lock).await.unwrap().is_some()
    }
    /// The gate_unlock events of the test's ledger.
    async fn unlock_events(&self) -> Vec<hopback::ledger::Event> {
        let l = Ledger::open_stream(&self.t.session, &self.t.cfg, &self.stream).await;
        l.read(StreamStart::First)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::GateUnlock)
            .collect()
    }
    async fn cleanup(self) {
        let _ = ledger::delete_stream(&self.t.session, &self.stream).await;
        if let Ok(ch) = self.t.session.channel().await {
            let _ = ch
                .queue_delete(self.lock.as_str().into(), Default::default())
                .await;
        }
        self.t.cleanup().await;
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn a_squatting_durable_lock_is_named_shown_and_removed_with_a_journaled_unlock() {
    let env = setup("lock-squat").await;
    let ns = env.t.ns.clone();
    // Someone with configure on `NS.*` declares the lock durable, from another connection.
    let squatter = common::connect(&env.t.cfg, "squatter").await;
    let ch = squatter.channel().await.unwrap();
    ch.queue_declare(
        env.lock.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    squatter.close().await;
    assert!(env.lock_exists().await);

    // `gate set` is refused at once (no 10 s wait for a flip that never ends), naming it.
    let t0 = Instant::now();
    let set = [
        "gate",
        "set",
        &ns,
        "v1=50",
        "v2=50",
        "--yes",
        "--force-zero-consumers",
    ];
    let out = env.run(&set).await;
    let refused_in = t0.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        t0.elapsed() < gate::GATE_LOCK_WAIT,
        "waited {:?}",
        t0.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "squatted",
        "durable, not exclusive",
        "no connection owns",
        &format!("hopback gate unlock {ns}"),
    ] {
        assert!(err.contains(want), "`{want}` missing: {err}");
    }
    assert!(!err.contains("another operator is flipping"), "{err}");
    let gate_changed = env.gate().await != GateSplit::from_pairs([("v1".into(), 100)]);
    assert!(!gate_changed);

    // `status NS` shows it (text and JSON), `check` warns about it.
    let st = env.run(&["status", &ns, "--no-attribution"]).await;
    assert!(st.status.success(), "{}", text(&st));
    let st_text = String::from_utf8_lossy(&st.stdout);
    assert!(
        st_text.contains("(!) gate lock:")
            && st_text.contains("squatted")
            && st_text.contains(&format!("hopback gate unlock {ns}")),
        "{st_text}"
    );
    let st = env
        .run(&["--json", "status", &ns, "--no-attribution"])
        .await;
    let snap: Value = serde_json::from_slice(&st.stdout).unwrap();
    let lock = &snap["namespaces"][0]["gate_lock"];
    assert_eq!(lock["durable"], true, "{snap}");
    assert_eq!(lock["exclusive"], false, "{snap}");
    assert!(lock["owner_connection"].is_null(), "{snap}");
    let ck = env.run(&["--json", "check"]).await;
    let ck: Value = serde_json::from_slice(&ck.stdout).unwrap();
    let line = ck["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == format!("gate lock {ns}").as_str())
        .unwrap_or_else(|| panic!("no gate lock line: {ck}"))
        .clone();
    assert_eq!(line["status"], "warn", "{line}");
    assert!(
        line["detail"].as_str().unwrap().contains("squatted"),
        "{line}"
    );
    assert_eq!(line["hint"], format!("hopback gate unlock {ns}").as_str());

    // Without a terminal and without --yes: refused, nothing removed.
    let out = env.run(&["gate", "unlock", &ns]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let kept = env.lock_exists().await;
    assert!(kept);
    let journaled_by_refusal = env.unlock_events().await.len() as u64;
    assert_eq!(journaled_by_refusal, 0);
    // The read paths left it where it was (checked just above).
    for (path, result) in [
        (
            "status",
            "handled: `(!) gate lock: … squatted` with `hopback gate unlock NS`; JSON: durable, not exclusive, no owner",
        ),
        (
            "check",
            "handled: warn `gate lock NS`: squatted, hint `hopback gate unlock NS`",
        ),
    ] {
        record::outcome(&record::Outcome {
            operation: path.into(),
            fault: "hostile: squatting durable NS.gate-lock".into(),
            lost: u64::from(!kept),
            duplicated: 0,
            result: result.into(),
            note: "lost = the lock removed by a read path; read-only, nothing to copy".into(),
            ..Default::default()
        });
    }

    // --yes: removed, verified, journaled (intent and outcome), in the timeline.
    let out = env
        .run(&["gate", "unlock", &ns, "--yes", "--reason", "squatter"])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("is free (verified)"), "{said}");
    assert!(!env.lock_exists().await);
    let evs = env.unlock_events().await;
    assert_eq!(
        evs.iter().map(|e| e.outcome).collect::<Vec<_>>(),
        vec![Outcome::Started, Outcome::Ok],
        "{evs:?}"
    );
    assert_eq!(evs[1].before["lock"]["durable"], true);
    assert_eq!(evs[1].params["action"], "delete_queue");
    assert_eq!(evs[1].author.as_deref(), Some("guest"));
    let tl = env
        .run(&["timeline", "--namespace", &ns, "--format", "text"])
        .await;
    let tl = String::from_utf8_lossy(&tl.stdout);
    assert!(
        tl.lines().any(|l| l.contains(&evs[1].short_id())
            && l.contains("gate unlock: lock")
            && l.contains("deleted the queue")),
        "{tl}"
    );
    // A second unlock finds nothing and changes nothing.
    let out = env.run(&["gate", "unlock", &ns, "--yes"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is free: nothing to unlock"));
    let unlock_events = env.unlock_events().await.len() as u64;
    assert_eq!(unlock_events, 2);
    record::outcome(&record::Outcome {
        operation: "gate unlock".into(),
        fault: "hostile: squatting durable NS.gate-lock".into(),
        lost: u64::from(!kept),
        duplicated: journaled_by_refusal + unlock_events.saturating_sub(2),
        result: "refused: without a terminal or --yes (exit 3, lock kept, nothing journaled); with --yes, handled: queue deleted, verified free, journaled started + ok (author guest), in the timeline; again: nothing to unlock".into(),
        note: format!(
            "lost = the lock removed by the refused unlock; copied = gate_unlock events beyond the one unlock's 2 ({unlock_events} in all)"
        ),
        ..Default::default()
    });

    // The flip goes through now.
    let out = env.run(&set).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.gate().await,
        GateSplit::from_pairs([("v1".into(), 50), ("v2".into(), 50)])
    );
    record::outcome(&record::Outcome {
        operation: "gate set".into(),
        fault: "hostile: squatting durable NS.gate-lock".into(),
        lost: u64::from(gate_changed),
        duplicated: 0,
        result: format!(
            "refused: at once ({:.1} s, exit 3), naming it (squatted: durable, not exclusive, no connection owns it) and `hopback gate unlock NS`; after the unlock: completed",
            refused_in.as_secs_f64()
        ),
        note: "lost = the gate changed by the refused flip (v1=100 kept)".into(),
        ..Default::default()
    });
    env.cleanup().await;
}

#[tokio::test]
async fn an_exclusive_lock_of_another_connection_is_named_and_freed_only_by_naming_it() {
    let env = setup("lock-excl").await;
    let ns = env.t.ns.clone();
    // Another program's connection holds the lock exclusively.
    let app = hopback::broker::session::connect_named(&env.t.cfg.profile, "billing app")
        .await
        .unwrap();
    let held = hopback::broker::lock::acquire(&app, &env.lock, Duration::ZERO)
        .await
        .unwrap();
    // The management API names an exclusive queue's owner with its stats (every ~5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let holder = loop {
        let h = gate::lock_holder(&env.mgmt, &env.t.cfg, &ns)
            .await
            .unwrap()
            .unwrap();
        if h.kind() != LockKind::ExclusiveOwnerUnknown {
            break h;
        }
        assert!(Instant::now() < deadline, "owner never named: {h:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(holder.kind(), LockKind::ForeignConnection, "{holder:?}");
    assert_eq!(holder.owner_user.as_deref(), Some("guest"));
    assert_eq!(holder.owner_client_name.as_deref(), Some("billing app"));
    let owner = holder.owner_connection.clone().unwrap();

    // The flip is refused at once, naming the connection.
    let t0 = Instant::now();
    let set = [
        "gate",
        "set",
        &ns,
        "v2=100",
        "--yes",
        "--force-zero-consumers",
    ];
    let out = env.run(&set).await;
    let refused_in = t0.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(t0.elapsed() < gate::GATE_LOCK_WAIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&owner) && err.contains("billing app") && err.contains("not a hopback flip"),
        "{err}"
    );
    let gate_changed = env.gate().await != GateSplit::from_pairs([("v1".into(), 100)]);
    assert!(!gate_changed, "a refused flip changed the gate");
    // --yes alone does not name the connection it would close: refused, the lock stays.
    let out = env.run(&["gate", "unlock", &ns, "--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--owner"));
    let kept = env.lock_exists().await;
    assert!(kept);
    let journaled_by_refusal = env.unlock_events().await.len() as u64;
    assert_eq!(journaled_by_refusal, 0);
    // Naming another connection: refused by the operation itself.
    let cx =
        hopback::ops::OpContext::open(env.t.session.clone(), &env.t.cfg, hopback::ops::Via::Cli)
            .await;
    let wrong = gate::unlock(
        &cx,
        &gate::UnlockRequest {
            namespace: ns.clone(),
            confirmed_owner: Some("127.0.0.1:1 -> 127.0.0.1:2".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.kind(), "refused", "{wrong}");

    // Naming it: the connection is closed, the lock is free, journaled.
    let out = env
        .run(&["gate", "unlock", &ns, "--yes", "--owner", &owner])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!env.lock_exists().await);
    let evs = env.unlock_events().await;
    assert_eq!(evs.last().unwrap().outcome, Outcome::Ok, "{evs:?}");
    assert_eq!(
        evs.last().unwrap().params["action"],
        "close_owner_connection"
    );
    // The holder's connection was the one closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.is_connected() {
        assert!(
            Instant::now() < deadline,
            "the owner connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    let out = env.run(&set).await;
    assert!(out.status.success(), "{}", text(&out));
    let vector = "hostile: exclusive NS.gate-lock held by another program's connection";
    record::outcome(&record::Outcome {
        operation: "gate set".into(),
        fault: vector.into(),
        lost: u64::from(gate_changed),
        duplicated: 0,
        result: format!(
            "refused: at once ({:.1} s, exit 3), naming the connection, its client name and that it is not a hopback flip; after the unlock: completed",
            refused_in.as_secs_f64()
        ),
        note: "lost = the gate changed by the refused flip (v1=100 kept)".into(),
        ..Default::default()
    });
    record::outcome(&record::Outcome {
        operation: "gate unlock".into(),
        fault: vector.into(),
        lost: u64::from(!kept),
        duplicated: journaled_by_refusal,
        result: "refused: --yes alone (exit 3: it would close a connection it does not name) and another connection named; with --owner CONNECTION, handled: that connection closed, lock free, journaled".into(),
        note: "lost = the lock removed by a refused unlock; copied = gate_unlock events journaled by the refusals".into(),
        ..Default::default()
    });

    // A live hopback flip's lock (a connection named `hopback …`) is not removed on --yes.
    let flip = common::connect(&env.t.cfg, "gate").await;
    let _lock = hopback::broker::lock::acquire(&flip, &env.lock, Duration::ZERO)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = gate::lock_holder(&env.mgmt, &env.t.cfg, &ns)
            .await
            .unwrap()
            .unwrap();
        if h.kind() == LockKind::HopbackFlip {
            break;
        }
        assert!(Instant::now() < deadline, "not seen as a flip: {h:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = env.run(&["gate", "unlock", &ns, "--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let kept = env.lock_exists().await;
    assert!(kept);
    record::outcome(&record::Outcome {
        operation: "gate unlock".into(),
        fault: "hostile: NS.gate-lock of a live hopback flip".into(),
        lost: u64::from(!kept),
        duplicated: 0,
        result: "refused: --yes does not remove a live flip's lock (exit 3); the lock kept".into(),
        note: "lost = the live flip's lock removed".into(),
        ..Default::default()
    });
    flip.close().await;
    env.cleanup().await;
}
