//! Headless drills of every scenario, end to end through the binary (issue 9's Must-show): each
//! ends with 0 lost, the rollback done by the scripted operator, the namespace deleted, and a
//! post-mortem draft whose shape matches an insta snapshot (times, ids and counts redacted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use hopback::ledger;
use serde_json::Value;

struct Drill {
    json: Value,
    postmortem: String,
    operator: String,
}

async fn drill(scenario: &str, respond_after: &str, canary: &str) -> Drill {
    let cfg = common::test_config();
    let stream = format!("t-drill-ledger-{}", uuid::Uuid::new_v4().simple());
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_path_buf();
    let (scen, s2) = (scenario.to_string(), stream.clone());
    let (respond, canary) = (respond_after.to_string(), canary.to_string());
    let out = tokio::task::spawn_blocking(move || {
        common::bin()
            .args([
                "--url",
                &common::test_url(),
                "--json",
                "drill",
                "--headless",
                "--scenario",
                &scen,
                "--fault-after",
                "1500ms",
                "--auto-respond-after",
                &respond,
                "--canary",
                &canary,
                "--rate",
                "40",
                "--verify-window",
                "2s",
            ])
            .env("HOPBACK_LEDGER_STREAM", &s2)
            .env("HOPBACK_DATA_DIR", &data_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "drill {scenario} exited {:?}\nstderr:\n{stderr}\nstdout:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = json["postmortem_path"]
        .as_str()
        .expect("a post-mortem path");
    let postmortem = std::fs::read_to_string(path).unwrap();
    // Private, like every file hopback writes.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{path}");
    // The namespace is gone (no --keep).
    let session = common::connect(&cfg, "test").await;
    let ns = json["status"]["namespace"].as_str().unwrap();
    assert!(ns.starts_with("drill-"));
    for q in ["v1", "v2", "dlq", "unrouted"] {
        assert!(
            session
                .passive_queue(&format!("{ns}.{q}"))
                .await
                .unwrap()
                .is_none(),
            "{ns}.{q} was not deleted"
        );
    }
    ledger::delete_stream(&session, &stream).await.unwrap();
    session.close().await;
    Drill {
        json,
        postmortem,
        operator: cfg.operator.clone(),
    }
}

fn check_common(d: &Drill, scenario: &str) -> Value {
    let score = &d.json["score"];
    let acc = &score["accounting"];
    assert_eq!(score["scenario"], scenario);
    assert_eq!(score["lost"], 0, "lost messages: {acc}");
    assert_eq!(acc["lost"], 0);
    assert_eq!(acc["duplicates_processed"], 0, "{acc}");
    let published = acc["published"].as_u64().unwrap();
    assert!(published > 50, "too few messages published: {acc}");
    let found = ["processed", "dead_lettered", "parked", "still_queued"]
        .iter()
        .map(|k| acc[*k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(
        found, published,
        "every id accounted for exactly once: {acc}"
    );
    // The scripted operator rolled back with the default plan and every step completed.
    let rb = &d.json["rollback"];
    assert_eq!(rb["outcome"]["outcome"], "done", "{rb}");
    let states: Vec<&str> = rb["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 7, "{states:?}");
    assert!(
        states.iter().all(|s| *s == "done" || *s == "already_done"),
        "{states:?}"
    );
    assert_eq!(score["steps_skipped"], 0);
    // Detection is the scripted operator's first action; mitigation happened after it.
    let detect = score["time_to_detect_ms"].as_u64().expect("detected");
    let mitigate = score["time_to_mitigate_ms"].as_u64().expect("mitigated");
    assert!((1_000..10_000).contains(&detect), "detect {detect} ms");
    assert!(mitigate >= detect, "mitigate {mitigate} < detect {detect}");
    d.json["status"]["fleet"]["per_version"]["v2"].clone()
}

#[tokio::test]
async fn poison_drill_and_its_postmortem() {
    let d = drill("poison", "1500ms", "20").await;
    let v2 = check_common(&d, "poison");
    assert!(
        v2["rejected"].as_u64().unwrap() > 0,
        "v2 never failed: {v2}"
    );
    // v2's dead letters were replayed to v1 by the rollback and processed there.
    let replayed: u64 = d.json["rollback"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["data"]["replayed"].as_u64())
        .sum();
    assert!(replayed > 0, "nothing replayed: {}", d.json["rollback"]);
    let md = d.postmortem.replace(&d.operator, "[operator]");
    insta::with_settings!({filters => vec![
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "[timestamp]"),
        (r"\d{2}:\d{2}:\d{2}", "[time]"),
        (r"drill-[0-9a-f]{8}", "drill-[id]"),
        (r"`[0-9a-f]{8}`", "`[id]`"),
        (r"rollback [0-9a-f]{8}", "rollback [id]"),
        (r"\(\d+ s\)", "([duration])"),
        (r"\d+\.\d s", "[seconds]"),
        (r"\| \d+ \|", "| [n] |"),
        (r"\d+ / 100", "[points] / 100"),
        (r"Why: .*", "Why: [reason]"),
    ]}, {
        insta::assert_snapshot!("drill_poison_postmortem", md);
    });
}

#[tokio::test]
async fn slow_drill() {
    let d = drill("slow", "4s", "20").await;
    let v2 = check_common(&d, "slow");
    assert!(
        v2["sla_breaches"].as_u64().unwrap() > 0,
        "v2 never slowed: {v2}"
    );
}

#[tokio::test]
async fn crash_drill() {
    let d = drill("crash", "1500ms", "20").await;
    let v2 = check_common(&d, "crash");
    assert!(
        v2["crashes"].as_u64().unwrap() > 0,
        "v2 never crashed: {v2}"
    );
}

#[tokio::test]
async fn partial_drill() {
    let d = drill("partial", "3s", "40").await;
    let v2 = check_common(&d, "partial");
    assert!(
        v2["rejected"].as_u64().unwrap() > 0,
        "v2 never failed: {v2}"
    );
    assert!(
        v2["processed"].as_u64().unwrap() > 0,
        "partial must still process other shapes: {v2}"
    );
}
