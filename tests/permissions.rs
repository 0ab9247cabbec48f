//! Permissions and read-only mode, against the real broker.
//!
//! - A broker user with read-only permissions (configure "", write "", read ".*") and a
//!   `monitoring`-tagged user with the same permissions (created per test through the management
//!   API, deleted at the end even on failure): every read command works or names the missing
//!   permission; every mutation is refused with one line naming the missing permission and a hint,
//!   a non-zero exit, and no damage — the namespace's queues, bindings, depths and dead-letter ids
//!   are the same afterwards (checked as guest).
//! - Read-only mode (`--read-only`, a profile's or the global `read_only`) refuses every mutation
//!   before touching the broker: pointed at a port where nothing listens, the answer is the
//!   refusal (exit 3), not a connection error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dlq_helpers;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestNs;
use common::record::{self, Outcome};
use common::users::{BrokerUser, mgmt_call};
use dlq_helpers::*;
use hopback::broker::topology::QueueType;

/// What a run of the binary produced.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one-line failure the binary prints last (`hopback: …`).
    fn failure_line(&self) -> Option<&str> {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("hopback: "))
    }
}

/// Run the binary with a deadline (a hang is a failure, not a stuck test suite).
fn run_bounded(mut c: Command, secs: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    c.stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {secs} s: {c:?}\nstderr: {}",
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&o).unwrap(),
        stderr: std::fs::read_to_string(&e).unwrap(),
    }
}

/// Everything of a namespace the broker holds, as guest sees it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    queues: Vec<String>,
    exchanges: Vec<String>,
    bindings: Vec<(String, String, String)>,
    depths: BTreeMap<String, u32>,
}

async fn snapshot(t: &TestNs) -> Snapshot {
    let ns = &t.ns;
    let mine = |n: &str| n == ns || n.starts_with(&format!("{ns}."));
    let names = |path: &str| -> Vec<String> {
        let (code, body) = mgmt_call("GET", path, None);
        assert_eq!(code, 200, "{path}: {body}");
        let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let mut n: Vec<String> = v
            .iter()
            .filter_map(|q| q["name"].as_str().map(str::to_string))
            .filter(|n| mine(n))
            .collect();
        n.sort();
        n
    };
    let queues = names("/api/queues/%2F?columns=name");
    let exchanges = names("/api/exchanges/%2F?columns=name");
    let (code, body) = mgmt_call("GET", "/api/bindings/%2F", None);
    assert_eq!(code, 200, "{body}");
    let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let mut bindings: Vec<(String, String, String)> = v
        .iter()
        .map(|b| {
            (
                b["source"].as_str().unwrap_or("").to_string(),
                b["destination"].as_str().unwrap_or("").to_string(),
                b["routing_key"].as_str().unwrap_or("").to_string(),
            )
        })
        // Consoles running elsewhere bind their dead-letter tap (`amq.gen-…`) to every DLX.
        .filter(|(s, d, _)| (mine(s) || mine(d)) && !d.starts_with("amq.gen-"))
        .collect();
    bindings.sort();
    let mut depths = BTreeMap::new();
    for q in &queues {
        depths.insert(q.clone(), depth(&t.session, q).await);
    }
    Snapshot {
        queues,
        exchanges,
        bindings,
        depths,
    }
}

/// The binary as `user` (password from HOPBACK_PASSWORD), with a throwaway ledger and data dir.
fn as_user(user: &BrokerUser, data: &Path, stream: &str, args: &[&str]) -> Command {
    let mut c = user.bin();
    c.env("HOPBACK_DATA_DIR", data)
        .env("HOPBACK_LEDGER_STREAM", stream)
        .env("HOPBACK_LOG_FILE", data.join("hopback.log"))
        .args(args);
    c
}

fn as_guest(data: &Path, stream: &str, args: &[&str]) -> Run {
    let mut c = common::bin();
    c.env("HOPBACK_DATA_DIR", data)
        .env("HOPBACK_LEDGER_STREAM", stream)
        .env("HOPBACK_LOG_FILE", data.join("hopback.log"))
        .args(args);
    run_bounded(c, 60)
}

/// The whole scenario for one kind of user.
async fn read_only_user_scenario(kind: &str, tags: &str, fault: &str) {
    let t = TestNs::new(&format!("perm-{kind}"), &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let stream = format!("hopback.ledger.{ns}");
    // 20 dead letters from v2, 5 ready messages on v2, the gate on a 50/50 canary (as guest).
    let dead = ids("dead", 20);
    publish(
        &t.session,
        &format!("{ns}.v2"),
        &dead,
        &|id| id.as_bytes().to_vec(),
        None,
        true,
    )
    .await;
    wait_depth(&t.session, &format!("{ns}.dlq"), 20, 10).await;
    let ready = ids("ready", 5);
    publish(
        &t.session,
        &format!("{ns}.v2"),
        &ready,
        &|id| id.as_bytes().to_vec(),
        None,
        false,
    )
    .await;
    let r = as_guest(
        data,
        &stream,
        &[
            "gate",
            "set",
            &ns,
            "v1=50",
            "v2=50",
            "--yes",
            "--force-zero-consumers",
        ],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let before = snapshot(&t).await;
    assert_eq!(before.depths[&format!("{ns}.dlq")], 20);
    assert_eq!(before.depths[&format!("{ns}.v2")], 5);

    let user = BrokerUser::create(&format!("perm-{kind}"), tags, "", "", ".*");
    let monitoring = tags.contains("monitoring");

    // Reads: each works, or says which permission or tag is missing.
    let reads: Vec<Vec<&str>> = vec![
        vec!["check"],
        vec!["status"],
        vec!["status", &ns],
        vec!["--json", "status", &ns],
        vec!["dlq", "list", &ns],
        vec!["dlq", "show", &ns, "0"],
        vec!["gate", "show", &ns],
        vec!["timeline", "--namespace", &ns],
        vec!["history", &ns],
    ];
    let mut read_ok = 0;
    for args in &reads {
        let r = run_bounded(as_user(&user, data, &stream, args), 60);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(
            !all.contains(&user.password),
            "password in the output of {args:?}"
        );
        assert!(!all.contains("panicked"), "{args:?}: {r:?}");
        if r.code == Some(0) {
            read_ok += 1;
            continue;
        }
        // Not working: it must say what is missing (the monitoring tag, a permission).
        assert!(
            all.contains("permission denied") || all.contains("monitoring"),
            "{args:?} failed without naming the missing permission: {r:?}"
        );
        assert!(all.contains("hint"), "{args:?}: no hint: {r:?}");
        if monitoring {
            // A monitoring user sees everything the management API shows.
            assert_eq!(
                args[0], "check",
                "{args:?} should work for a monitoring user: {r:?}"
            );
        }
    }
    // These need only AMQP read: they work for both kinds of user — browsing once the operator
    // says the DLQ is classic (`--force`) when the management API cannot tell (issue 18: an
    // unknown queue type counts as quorum, and the refusal says why it is unknown).
    for args in [
        vec!["dlq", "list", &ns, "--force"],
        vec!["dlq", "show", &ns, "0", "--force"],
        vec!["status", &ns],
    ] {
        let r = run_bounded(as_user(&user, data, &stream, &args), 60);
        assert_eq!(r.code, Some(0), "{args:?}: {r:?}");
    }
    let r = run_bounded(
        as_user(&user, data, &stream, &["dlq", "list", &ns, "--force"]),
        60,
    );
    assert!(r.stdout.contains("20 dead letters"), "{r:?}");
    let r = run_bounded(as_user(&user, data, &stream, &["dlq", "list", &ns]), 60);
    if monitoring {
        assert_eq!(r.code, Some(0), "the API tells a monitoring user: {r:?}");
    } else {
        assert_ne!(r.code, Some(0), "{r:?}");
        assert!(
            r.stderr.contains("its type is unknown") && r.stderr.contains("permission denied"),
            "{r:?}"
        );
    }
    // The team's ledger is read without CONFIGURE (passive declare): guest's flip is there,
    // not a local fallback file.
    let r = run_bounded(
        as_user(&user, data, &stream, &["timeline", "--namespace", &ns]),
        60,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("v1=50 v2=50"), "{r:?}");
    assert!(!r.stdout.contains("LOCAL FILE"), "{r:?}");

    // Mutations: each refused, one line naming the missing permission, a hint, no damage.
    let fresh_ns = common::unique_ns("perm-new");
    let export = data.join("purge-export.jsonl");
    let export_s = export.to_string_lossy().into_owned();
    let mutations: Vec<(&str, Vec<&str>)> = vec![
        (
            "gate flip",
            vec![
                "gate",
                "set",
                &ns,
                "v2=100",
                "--yes",
                "--force-zero-consumers",
            ],
        ),
        (
            "gate flip (canary)",
            vec![
                "gate",
                "set",
                &ns,
                "v1=90",
                "v2=10",
                "--yes",
                "--force-zero-consumers",
            ],
        ),
        ("replay", vec!["dlq", "replay", &ns, "--yes"]),
        (
            "replay to v1",
            vec!["dlq", "replay", &ns, "--to", "v1", "--yes"],
        ),
        (
            "drain",
            vec!["dlq", "replay", &ns, "--from", "v2", "--to", "v1", "--yes"],
        ),
        (
            "purge",
            vec!["dlq", "purge", &ns, "--export", &export_s, "--yes"],
        ),
        ("rollback", vec!["rollback", &ns, "--to", "v1", "--yes"]),
        (
            "init (existing namespace)",
            vec![
                "init",
                &ns,
                "--versions",
                "v1,v2",
                "--queue-type",
                "classic",
            ],
        ),
        (
            "init (new namespace)",
            vec!["init", &fresh_ns, "--versions", "v1,v2"],
        ),
        ("drill", vec!["drill", "--headless", "--scenario", "poison"]),
    ];
    let mut refused = Vec::new();
    for (op, args) in &mutations {
        let r = run_bounded(as_user(&user, data, &stream, args), 90);
        assert_ne!(
            r.code,
            Some(0),
            "{op}: a read-only user's mutation succeeded: {r:?}"
        );
        assert!(!r.stderr.contains("panicked"), "{op}: {r:?}");
        let line = r
            .failure_line()
            .unwrap_or_else(|| panic!("{op}: no `hopback: …` failure line: {r:?}"));
        assert!(
            line.contains("permission denied"),
            "{op}: the failure does not name the missing permission: {line}"
        );
        assert!(line.contains("(hint: "), "{op}: no hint: {line}");
        assert!(!line.contains(&user.password));
        assert_eq!(r.code, Some(3), "{op}: a refusal exits 3: {r:?}");
        refused.push((
            op.to_string(),
            line.trim_start_matches("hopback: ").to_string(),
        ));
        // No damage, checked after every single mutation.
        let now = snapshot(&t).await;
        assert_eq!(now, before, "{op} changed the namespace");
    }
    // The purge exported nothing it then removed: no export was even started.
    assert!(!export.exists(), "the refused purge wrote an export");
    // A new namespace was not created.
    let s = t.session.clone();
    assert!(!s.exchange_exists(&fresh_ns).await.unwrap());
    // Every dead letter is still there, exactly once.
    let dlq = drain_ids(&t.session, &format!("{ns}.dlq")).await;
    let mut got: Vec<String> = dlq.iter().map(|(id, _)| id.clone()).collect();
    got.sort();
    let mut want = dead.clone();
    want.sort();
    let lost = want.iter().filter(|id| !got.contains(id)).count() as u64;
    let duplicated = got.windows(2).filter(|w| w[0] == w[1]).count() as u64;
    assert_eq!(got, want, "dead letters changed");
    for (op, line) in &refused {
        record::outcome(&Outcome {
            operation: op.clone(),
            fault: fault.to_string(),
            lost,
            duplicated,
            recovered_s: None,
            result: format!("refused: {line}"),
            note: format!(
                "exit 3; queues, bindings, depths and the 20 dead-letter ids unchanged; {read_ok}/{} read commands worked",
                reads.len()
            ),
        });
    }
    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    drop(user);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_user_reads_what_it_may_and_every_mutation_is_refused_without_damage() {
    read_only_user_scenario("ro", "", "read-only user").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitoring_user_sees_everything_and_every_mutation_is_refused_without_damage() {
    read_only_user_scenario("mon", "monitoring", "monitoring user").await;
}

/// Every mutating command, pointed at a port where nothing listens: read-only mode must refuse
/// first (exit 3, "read-only"), never reach the point of a connection error.
#[test]
fn read_only_mode_refuses_every_mutation_before_touching_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = "amqp://guest:guest@127.0.0.1:9/%2f";
    let mutations: Vec<Vec<&str>> = vec![
        vec!["init", "ro-ns", "--versions", "v1,v2"],
        vec!["gate", "set", "ro-ns", "v2=100", "--yes"],
        vec!["dlq", "replay", "ro-ns", "--yes"],
        vec![
            "dlq", "replay", "ro-ns", "--from", "v2", "--to", "v1", "--yes",
        ],
        vec!["dlq", "replay", "ro-ns", "--from", "unrouted", "--yes"],
        vec!["dlq", "purge", "ro-ns", "--yes"],
        vec!["rollback", "ro-ns", "--to", "v1", "--yes"],
        vec!["rollback", "--resume", "0123abcd", "--yes"],
        vec!["revert", "ro-ns", "--to", "0123abcd", "--yes"],
        vec!["drill", "--headless"],
    ];
    // Three ways to be read-only: the flag; a profile; the global setting with no profile value.
    let cfg_profile = dir.path().join("profile.toml");
    std::fs::write(
        &cfg_profile,
        format!("default_profile = \"p\"\n[profiles.p]\nurl = \"{nowhere}\"\nread_only = true\n"),
    )
    .unwrap();
    let cfg_global = dir.path().join("global.toml");
    std::fs::write(
        &cfg_global,
        format!("read_only = true\ndefault_profile = \"p\"\n[profiles.p]\nurl = \"{nowhere}\"\n"),
    )
    .unwrap();
    type Setup = Box<dyn Fn(&mut Command)>;
    let setups: Vec<(&str, Setup)> = vec![
        (
            "--read-only",
            Box::new(move |c: &mut Command| {
                c.args(["--read-only", "--url", nowhere]);
            }),
        ),
        ("profile read_only", {
            let p = cfg_profile.clone();
            Box::new(move |c: &mut Command| {
                c.env_remove("HOPBACK_URL").arg("--config").arg(&p);
            })
        }),
        ("global read_only", {
            let p = cfg_global.clone();
            Box::new(move |c: &mut Command| {
                c.env_remove("HOPBACK_URL").arg("--config").arg(&p);
            })
        }),
    ];
    for (how, setup) in &setups {
        for args in &mutations {
            let mut c = common::bin();
            c.env("HOPBACK_DATA_DIR", dir.path().join("data"))
                .env("HOPBACK_LOG_FILE", dir.path().join("hopback.log"));
            setup(&mut c);
            c.args(args);
            let started = Instant::now();
            let r = run_bounded(c, 30);
            assert_eq!(r.code, Some(3), "{how} {args:?}: {r:?}");
            let line = r.failure_line().unwrap_or("");
            assert!(line.contains("read-only"), "{how} {args:?}: {line}");
            assert!(line.contains("(hint: "), "{how} {args:?}: {line}");
            assert!(
                !r.stderr.contains("cannot reach") && !r.stderr.contains("timed out"),
                "{how} {args:?} touched the broker first: {r:?}"
            );
            // Nothing listens on port 9: a connect attempt would be refused or time out; a
            // refusal before connecting is instant.
            assert!(started.elapsed() < Duration::from_secs(5), "{how} {args:?}");
        }
    }
    // And the precedence end to end: a profile's `read_only = false` under a global `true` is
    // writable — so the same command gets past the check and fails on the unreachable broker.
    let cfg_override = dir.path().join("override.toml");
    std::fs::write(
        &cfg_override,
        format!("read_only = true\ndefault_profile = \"p\"\n[profiles.p]\nurl = \"{nowhere}\"\nread_only = false\n"),
    )
    .unwrap();
    let mut c = common::bin();
    c.env("HOPBACK_LOG_FILE", dir.path().join("hopback.log"))
        .env_remove("HOPBACK_URL")
        .arg("--config")
        .arg(&cfg_override)
        .args(["gate", "set", "ro-ns", "v2=100", "--yes"]);
    let r = run_bounded(c, 30);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("cannot reach"), "{r:?}");
    // …and --read-only still wins over that profile.
    let mut c = common::bin();
    c.env("HOPBACK_LOG_FILE", dir.path().join("hopback.log"))
        .env_remove("HOPBACK_URL")
        .arg("--config")
        .arg(&cfg_override)
        .args(["--read-only", "gate", "set", "ro-ns", "v2=100", "--yes"]);
    let r = run_bounded(c, 30);
    assert_eq!(r.code, Some(3), "{r:?}");
}
