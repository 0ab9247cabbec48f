//! Republish hygiene (issue 31, item 2), against the real broker. A producer that may only write
//! to `NS.dlx` publishes dead letters whose `CC` (and `BCC`) header names a queue outside the
//! namespace (`victim-<uuid>`) and the ledger stream; replays through the client engine, the
//! broker engine (`--to v1` and to origin) and the re-import of an export must deliver each
//! message to its target exactly once, and nothing to the victim or the ledger. A dead letter whose
//! `user_id` is another valid broker user (created here, with a password) must not block a drain
//! or a replay on either engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "dlq_helpers/mod.rs"]
mod dlq_helpers;

use std::collections::BTreeMap;
use std::time::Duration;

use common::record::{self, Outcome};
use common::users::BrokerUser;
use dlq_helpers::*;
use futures::StreamExt;
use hopback::broker::headers::header_string;
use hopback::broker::republish::{
    ORIGINAL_BCC_HEADER, ORIGINAL_CC_HEADER, ORIGINAL_USER_ID_HEADER,
};
use hopback::broker::session::Session;
use hopback::topology::Namespace;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

fn body(id: &str) -> Vec<u8> {
    format!("{{\"id\":\"{id}\"}}").into_bytes()
}

/// One test's namespace (classic queues, so the broker engine takes it on 3.x too), its own
/// ledger stream, and a victim queue outside the namespace.
struct Field {
    ns: String,
    names: Namespace,
    ledger: String,
    victim: String,
    session: std::sync::Arc<Session>,
}

impl Field {
    async fn new(prefix: &str) -> Self {
        let ns = common::unique_ns(prefix);
        let ledger = format!("{ns}-ledger");
        let victim = format!("victim-{}", uuid::Uuid::new_v4().simple());
        let f = Self {
            names: Namespace::convention(&ns),
            session: common::connect(&common::test_config(), "test").await,
            ns,
            ledger,
            victim,
        };
        let out = f
            .bin()
            .args([
                "init",
                &f.ns,
                "--versions",
                "v1,v2",
                "--queue-type",
                "classic",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        hopback::broker::amqp::declare_queue(
            &f.session,
            "victim",
            &f.victim,
            true,
            FieldTable::default(),
        )
        .await
        .unwrap();
        f
    }
    /// The binary, journaling to this test's ledger stream.
    fn bin(&self) -> std::process::Command {
        let mut c = common::bin();
        c.env("HOPBACK_LEDGER_STREAM", &self.ledger);
        c
    }
    fn v1(&self) -> String {
        self.names.version_queue("v1").unwrap()
    }
    /// Run the binary with `args`; it must succeed. Returns stdout + stderr.
    fn run(&self, args: &[&str]) -> String {
        let out = self.bin().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        text
    }
    /// Sender-selected routing to the victim and the ledger stream.
    fn routes(&self) -> AMQPValue {
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString(LongString::from(self.victim.as_str())),
            AMQPValue::LongString(LongString::from(self.ledger.as_str())),
        ]))
    }
    /// `n` dead letters published straight to `NS.dlx` (a fanout: their CC/BCC route nowhere
    /// on this publish), each with `header` = [victim, ledger] and an origin of `NS.v1`.
    async fn forged(&self, prefix: &str, n: usize, header: &str) -> Vec<String> {
        let ids = ids(&format!("{}-{prefix}", self.ns), n);
        let ch = self.session.confirm_channel().await.unwrap();
        for id in &ids {
            let mut h = FieldTable::default();
            h.insert(header.into(), self.routes());
            h.insert(
                "x-first-death-queue".into(),
                AMQPValue::LongString(LongString::from(self.v1().as_str())),
            );
            let c = ch
                .basic_publish(
                    self.names.dlx.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &body(id),
                    BasicProperties::default()
                        .with_message_id(id.as_str().into())
                        .with_delivery_mode(2)
                        .with_headers(h),
                )
                .await
                .unwrap();
            assert!(matches!(c.await.unwrap(), lapin::Confirmation::Ack(None)));
        }
        let _ = ch.close(200, "ok".into()).await;
        ids
    }
    /// Every message id ever appended to this test's ledger stream.
    async fn ledger_ids(&self) -> Vec<String> {
        let ch = self.session.channel().await.unwrap();
        ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString(LongString::from("first")),
        );
        let mut c = ch
            .basic_consume(
                self.ledger.as_str().into(),
                "ledger-read".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_millis(1500), c.next()).await
        {
            out.push(
                d.properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            );
            d.acker.ack(Default::default()).await.unwrap();
        }
        let _ = ch.close(200, "ok".into()).await;
        out
    }
    /// Nothing reached the victim or the ledger stream; then remove everything. Returns the
    /// message ids the ledger stream held (for the record).
    async fn finish(self, forged: &[String]) -> Vec<String> {
        assert_eq!(
            depth(&self.session, &self.victim).await,
            0,
            "the victim got copies"
        );
        let ledger = self.ledger_ids().await;
        assert!(!ledger.is_empty(), "the ledger holds the test's events");
        for id in forged {
            assert!(
                !ledger.contains(id),
                "{id} was copied into the ledger stream"
            );
        }
        let ch = self.session.channel().await.unwrap();
        for x in hopback::topology::origin_routers(&self.names.entry) {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
        let _ = ch.close(200, "ok".into()).await;
        delete_queues(
            &self.session,
            &[&self.victim, &self.ledger, &self.names.parked],
        )
        .await;
        hopback::broker::topology::delete_namespace(
            &self.session,
            &self.ns,
            &["v1".into(), "v2".into()],
        )
        .await
        .unwrap();
        self.session.close().await;
        ledger
    }
}

fn id_set(v: &[(String, BasicProperties)]) -> Vec<String> {
    let mut ids: Vec<String> = v.iter().map(|(i, _)| i.clone()).collect();
    ids.sort();
    ids
}

fn header<'a>(p: &'a BasicProperties, k: &str) -> Option<&'a AMQPValue> {
    p.headers().as_ref().and_then(|h| h.inner().get(k))
}

/// Found more than once: `of` ids found in `found` (a victim queue, the ledger stream).
fn found_in(of: &[String], found: &[String]) -> u64 {
    found.iter().filter(|i| of.contains(i)).count() as u64
}

/// What one replay of forged dead letters did, for the record once the ledger has been read.
struct Run {
    path: &'static str,
    cc: Vec<String>,
    bcc: Vec<String>,
    target: Vec<String>,
    victim: Vec<String>,
    cc_result: &'static str,
    bcc_result: &'static str,
}

/// One record per vector of `run`: CC to the victim, BCC, CC to the ledger stream.
fn record_run(run: &Run, ledger: &[String]) {
    let (cc_lost, cc_copied) = record::tally(&run.cc, &run.target);
    let (bcc_lost, bcc_copied) = record::tally(&run.bcc, &run.target);
    let (cc_victim, bcc_victim) = (
        found_in(&run.cc, &run.victim),
        found_in(&run.bcc, &run.victim),
    );
    let (cc_ledger, bcc_ledger) = (found_in(&run.cc, ledger), found_in(&run.bcc, ledger));
    let (n_cc, n_bcc) = (run.cc.len(), run.bcc.len());
    record::outcome(&Outcome {
        operation: run.path.into(),
        fault: "hostile: CC header naming a victim queue".into(),
        lost: cc_lost,
        duplicated: cc_copied + cc_victim,
        result: run.cc_result.into(),
        note: format!(
            "{n_cc} dead letters: {} in v1, {cc_victim} in the victim queue",
            n_cc as u64 - cc_lost
        ),
        ..Default::default()
    });
    if n_bcc > 0 {
        record::outcome(&Outcome {
            operation: run.path.into(),
            fault: "hostile: BCC header".into(),
            lost: bcc_lost,
            duplicated: bcc_copied + bcc_victim + bcc_ledger,
            result: run.bcc_result.into(),
            note: format!(
                "{n_bcc} dead letters (BCC = victim + ledger stream): {} in v1, {bcc_victim} in the victim queue, {bcc_ledger} in the ledger stream",
                n_bcc as u64 - bcc_lost
            ),
            ..Default::default()
        });
    }
    record::outcome(&Outcome {
        operation: run.path.into(),
        fault: "hostile: CC naming the ledger stream".into(),
        lost: cc_lost,
        duplicated: cc_copied + cc_ledger,
        result: run.cc_result.into(),
        note: format!(
            "{n_cc} dead letters: {} in v1, {cc_ledger} among the ledger stream's {} records",
            n_cc as u64 - cc_lost,
            ledger.len()
        ),
        ..Default::default()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_and_bcc_never_copy_a_dead_letter_out_of_the_namespace_on_either_engine() {
    let f = Field::new("cc").await;
    let mut forged = Vec::new();
    let mut done = Vec::new();
    let runs: [(&str, &[&str]); 3] = [
        ("client", &["--to", "v1", "--engine", "client"]),
        ("broker-v1", &["--to", "v1", "--engine", "broker"]),
        ("broker-origin", &["--engine", "broker"]),
    ];
    for (label, how) in runs {
        let cc = f.forged(&format!("{label}-cc"), 20, "CC").await;
        // The broker strips BCC on delivery: these arrive without it (none may route anywhere).
        let bcc = f.forged(&format!("{label}-bcc"), 5, "BCC").await;
        wait_depth(&f.session, &f.names.dlq, 25, 30).await;
        let mut args = vec!["dlq", "replay", f.ns.as_str(), "--yes"];
        args.extend_from_slice(how);
        let text = f.run(&args);
        let engine = if label == "client" {
            "client engine"
        } else {
            "broker engine"
        };
        assert!(text.contains(engine), "{label}: {text}");
        let got = drain_ids(&f.session, &f.v1()).await;
        let mut want: Vec<String> = cc.iter().chain(&bcc).cloned().collect();
        want.sort();
        assert_eq!(id_set(&got), want, "{label}: each once in v1");
        assert_eq!(depth(&f.session, &f.names.dlq).await, 0, "{label}");
        assert_eq!(depth(&f.session, &f.victim).await, 0, "{label}: victim");
        for (id, p) in &got {
            let h = p.headers().as_ref();
            assert!(header(p, "BCC").is_none(), "{label} {id}");
            if !cc.contains(id) {
                continue;
            }
            if label == "client" {
                // Moved aside, kept whole.
                assert!(header(p, "CC").is_none(), "{label} {id}: {h:?}");
                assert_eq!(header(p, ORIGINAL_CC_HEADER), Some(&f.routes()), "{id}");
            } else {
                // A shovel cannot rename a header: the CC stays, and routed nowhere else.
                assert_eq!(header(p, "CC"), Some(&f.routes()), "{label} {id}: {h:?}");
            }
        }
        // (Empty: checked above. Read by id for the record.)
        let victim = drain_ids(&f.session, &f.victim).await;
        forged.extend(cc.iter().cloned());
        forged.extend(bcc.iter().cloned());
        done.push(Run {
            path: match label {
                "client" => "dlq replay (client engine)",
                "broker-v1" => "dlq replay (broker engine, to v1)",
                _ => "dlq replay (broker engine, to origin)",
            },
            cc,
            bcc,
            target: got.into_iter().map(|(i, _)| i).collect(),
            victim: victim.into_iter().map(|(i, _)| i).collect(),
            cc_result: if label == "client" {
                "handled: CC moved aside to x-hopback-original-cc; delivered to its target only"
            } else {
                "handled: CC kept (a shovel cannot rename a header) and routed nowhere else; delivered to its target only"
            },
            bcc_result: "handled: the broker strips BCC on delivery; delivered to its target only",
        });
    }
    let ledger = f.finish(&forged).await;
    for run in &done {
        record_run(run, &ledger);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reimported_export_with_cc_and_bcc_goes_to_its_target_only() {
    let f = Field::new("ccfile").await;
    let forged = f.forged("cc", 20, "CC").await;
    wait_depth(&f.session, &f.names.dlq, 20, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    f.run(&[
        "dlq",
        "purge",
        &f.ns,
        "--export",
        file.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(depth(&f.session, &f.names.dlq).await, 0);
    // An edited export may carry BCC too: the first five lines' CC becomes BCC.
    let text = std::fs::read_to_string(&file).unwrap();
    let exported: Vec<String> = text
        .lines()
        .map(|l| {
            let doc: serde_json::Value = serde_json::from_str(l).unwrap();
            doc["amqp_properties"]["message_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let mut bcc = Vec::new();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut doc: serde_json::Value = serde_json::from_str(l).unwrap();
            let headers = doc["amqp_properties"]["headers"].as_object_mut().unwrap();
            assert!(headers.contains_key("CC"), "{l}");
            if i < 5 {
                let v = headers.remove("CC").unwrap();
                headers.insert("BCC".into(), v);
                bcc.push(
                    doc["amqp_properties"]["message_id"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
            doc.to_string()
        })
        .collect();
    assert_eq!(lines.len(), 20);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = f.run(&[
        "dlq",
        "replay",
        &f.ns,
        "--from-file",
        file.to_str().unwrap(),
        "--to",
        "v1",
        "--yes",
    ]);
    assert!(out.contains("re-imported 20 of 20"), "{out}");
    let got = drain_ids(&f.session, &f.v1()).await;
    let mut want = forged.clone();
    want.sort();
    assert_eq!(id_set(&got), want, "each once in v1");
    for (id, p) in &got {
        assert!(
            header(p, "CC").is_none() && header(p, "BCC").is_none(),
            "{id}"
        );
        let kept = if bcc.contains(id) {
            ORIGINAL_BCC_HEADER
        } else {
            ORIGINAL_CC_HEADER
        };
        assert_eq!(header(p, kept), Some(&f.routes()), "{id}: {p:?}");
    }
    // (Empty: checked in `finish` too. Read by id for the record.)
    let victim: Vec<String> = drain_ids(&f.session, &f.victim)
        .await
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let ledger = f.finish(&forged).await;
    let (lost, copied) = record::tally(&forged, &exported);
    record::outcome(&Outcome {
        operation: "dlq purge".into(),
        fault: "hostile: CC header naming a victim queue".into(),
        lost,
        duplicated: copied + found_in(&forged, &victim) + found_in(&forged, &ledger),
        result: "handled: exported with the CC header as it was, then removed; exit 0".into(),
        note: format!(
            "{} dead letters: {} lines in the export, DLQ empty; none in the victim queue or the ledger stream",
            forged.len(),
            exported.len()
        ),
        ..Default::default()
    });
    let cc: Vec<String> = forged
        .iter()
        .filter(|i| !bcc.contains(i))
        .cloned()
        .collect();
    record_run(
        &Run {
            path: "dlq replay --from-file",
            cc,
            bcc,
            target: got.into_iter().map(|(i, _)| i).collect(),
            victim,
            cc_result: "handled: CC moved aside to x-hopback-original-cc; re-imported to its target only",
            bcc_result: "handled: BCC (edited into the export) moved aside to x-hopback-original-bcc; re-imported to its target only",
        },
        &ledger,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_but_valid_user_id_blocks_no_drain_and_no_replay() {
    let f = Field::new("userid").await;
    // Another broker user, allowed to write only to the namespace's queues (through the default
    // exchange, `amq.default`); it publishes with its own (valid) user_id.
    let write = format!("^(amq\\.default|{}\\..*)$", regex::escape(&f.ns));
    let user = BrokerUser::create("producer", "", "", &write, "");
    let producer = common::connect(&user.config(), "test producer").await;
    let v2 = f.names.version_queue("v2").unwrap();
    let publish_as = |queue: String, ids: Vec<String>, expire: bool| {
        let producer = producer.clone();
        let uid = user.name.clone();
        async move {
            let ch = producer.confirm_channel().await.unwrap();
            for id in &ids {
                let mut p = BasicProperties::default()
                    .with_message_id(id.as_str().into())
                    .with_user_id(uid.as_str().into())
                    .with_delivery_mode(2);
                if expire {
                    p = p.with_expiration("0".into());
                }
                let c = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &body(id),
                        p,
                    )
                    .await
                    .unwrap();
                assert!(matches!(c.await.unwrap(), lapin::Confirmation::Ack(None)));
            }
            let _ = ch.close(200, "ok".into()).await;
        }
    };
    let tasks = ids(&format!("{}-task", f.ns), 200);
    publish_as(v2.clone(), tasks.clone(), false).await;
    let dead = ids(&format!("{}-dead", f.ns), 20);
    publish_as(f.v1(), dead.clone(), true).await;
    wait_depth(&f.session, &v2, 200, 30).await;
    wait_depth(&f.session, &f.names.dlq, 20, 30).await;
    producer.close().await;

    // The drain (the rollback's move, client engine).
    let text = f.run(&[
        "dlq", "replay", &f.ns, "--from", "v2", "--to", "v1", "--yes",
    ]);
    assert!(!text.contains("PRECONDITION"), "{text}");
    let got = drain_ids(&f.session, &f.v1()).await;
    assert_eq!(id_set(&got), tasks, "the drain moved all 200, once each");
    let drained: Vec<String> = got.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(depth(&f.session, &v2).await, 0);
    for (id, p) in &got {
        assert_eq!(p.user_id(), &None, "{id}");
        assert_eq!(
            header_string(p.headers().as_ref(), ORIGINAL_USER_ID_HEADER).as_deref(),
            Some(user.name.as_str()),
            "{id}"
        );
    }

    // The dead letters: half by the client engine, the rest by the broker engine.
    let text = f.run(&[
        "dlq", "replay", &f.ns, "--to", "v1", "--engine", "client", "--limit", "10", "--yes",
    ]);
    assert!(text.contains("moved 10"), "{text}");
    let text = f.run(&[
        "dlq", "replay", &f.ns, "--to", "v1", "--engine", "broker", "--yes",
    ]);
    assert!(text.contains("moved 10"), "{text}");
    let got = drain_ids(&f.session, &f.v1()).await;
    let mut want = dead.clone();
    want.sort();
    assert_eq!(id_set(&got), want, "every dead letter replayed, once each");
    let mut by_engine = BTreeMap::<&str, usize>::new();
    let mut moved_by = BTreeMap::<&str, Vec<String>>::new();
    for (id, p) in &got {
        let moved_aside = header_string(p.headers().as_ref(), ORIGINAL_USER_ID_HEADER);
        match (
            p.user_id().as_ref().map(|u| u.as_str()),
            moved_aside.as_deref(),
        ) {
            // Client engine: moved aside.
            (None, Some(u)) if u == user.name => {
                *by_engine.entry("client").or_default() += 1;
                moved_by.entry("client").or_default().push(id.clone());
            }
            // Broker engine: the shovel's internal user may publish it; it stays.
            (Some(u), None) if u == user.name => {
                *by_engine.entry("broker").or_default() += 1;
                moved_by.entry("broker").or_default().push(id.clone());
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(
        by_engine,
        BTreeMap::from([("broker", 10), ("client", 10)]),
        "{got:?}"
    );
    drop(user);
    f.finish(&[]).await;
    let (lost, copied) = record::tally(&tasks, &drained);
    record::outcome(&Outcome {
        operation: "drain (dlq replay --from v2)".into(),
        fault: "hostile: foreign valid user_id".into(),
        lost,
        duplicated: copied,
        result:
            "handled: user_id moved aside to x-hopback-original-user-id; no PRECONDITION_FAILED"
                .into(),
        note: format!("200 tasks of another broker user: {} in v1", drained.len()),
        ..Default::default()
    });
    for (engine, path, result) in [
        (
            "client",
            "dlq replay (client engine)",
            "handled: user_id moved aside to x-hopback-original-user-id; `--limit 10` moved 10",
        ),
        (
            "broker",
            "dlq replay (broker engine, to v1)",
            "handled: user_id kept (the shovel may publish it); moved the other 10",
        ),
    ] {
        let ids = moved_by.remove(engine).unwrap_or_default();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        record::outcome(&Outcome {
            operation: path.into(),
            fault: "hostile: foreign valid user_id".into(),
            lost: 10u64.saturating_sub(unique.len() as u64),
            duplicated: (ids.len() - unique.len()) as u64,
            result: result.into(),
            note: format!(
                "20 dead letters of another broker user, half per engine: {} in v1 by this engine",
                ids.len()
            ),
            ..Default::default()
        });
    }
}
