//! Read paths create nothing; files are private (issue 31, item 8), against the real broker.
//!
//! - In a vhost of its own (made and deleted here, so other tests' objects cannot interfere),
//!   `check`, `--read-only check`, `status`, `timeline`, `history`, `gate show`, `dlq list`,
//!   `dlq show`, `postmortem` and a read-only console (its runner, ledger feed and refresh
//!   tasks) leave the vhost's queues, exchanges and bindings exactly as they were — for a fresh
//!   ledger stream and a fresh namespace, then for an existing namespace. A read that needs the
//!   missing ledger says "unknown", it does not create it.
//! - Run with `HOME`/XDG pointed into a temp dir, the binary writes its log, a ledger cache, the
//!   ledger's fallback file, a post-mortem and an export: every file 0600, every directory it
//!   owns 0700, and a data dir, log, rotated log and fallback file left 0755/0644 by an earlier
//!   version are tightened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::TestNs;
use hopback::app::ops::OpsRunner;
use hopback::app::protocol::{OpMsg, OpRequest};
use hopback::app::state::Msg;
use hopback::broker::topology::QueueType;
use hopback::config::{self, Overrides};
use hopback::ledger::{EventKind, Ledger};
use serde_json::Value;
use tokio::sync::mpsc;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn mgmt(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = http()
        .request(method, format!("{}{path}", common::test_mgmt_url()))
        .basic_auth("guest", Some("guest"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

/// A vhost for one test, guest allowed everything in it; deleted by `drop_vhost`.
async fn make_vhost() -> String {
    let vh = format!(
        "hb-read-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let (c, _) = mgmt(reqwest::Method::PUT, &format!("/api/vhosts/{vh}"), None).await;
    assert!((200..300).contains(&c), "vhost: {c}");
    let all = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
    let (c, _) = mgmt(
        reqwest::Method::PUT,
        &format!("/api/permissions/{vh}/guest"),
        Some(all),
    )
    .await;
    assert!((200..300).contains(&c), "permissions: {c}");
    vh
}

async fn drop_vhost(vh: &str) {
    mgmt(reqwest::Method::DELETE, &format!("/api/vhosts/{vh}"), None).await;
}

/// What exists in the vhost: queues (with whether they are exclusive and auto-delete),
/// exchanges, bindings.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Objects {
    queues: BTreeSet<(String, bool)>,
    exchanges: BTreeSet<String>,
    bindings: BTreeSet<(String, String, String)>,
}

async fn objects(vh: &str) -> Objects {
    let list = |v: Value| v.as_array().cloned().unwrap_or_default();
    let (_, q) = mgmt(reqwest::Method::GET, &format!("/api/queues/{vh}"), None).await;
    let (_, x) = mgmt(reqwest::Method::GET, &format!("/api/exchanges/{vh}"), None).await;
    let (_, b) = mgmt(reqwest::Method::GET, &format!("/api/bindings/{vh}"), None).await;
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    Objects {
        queues: list(q)
            .iter()
            .map(|q| {
                let transient = q["exclusive"].as_bool() == Some(true)
                    && q["auto_delete"].as_bool() == Some(true);
                (s(q, "name"), transient)
            })
            .collect(),
        exchanges: list(x).iter().map(|x| s(x, "name")).collect(),
        bindings: list(b)
            .iter()
            .map(|b| (s(b, "source"), s(b, "destination"), s(b, "routing_key")))
            .collect(),
    }
}

/// `after` holds nothing `before` did not, except (when `transient_ok`) exclusive auto-delete
/// queues of a connection still open (the console's tap) and their bindings. Polled for a few
/// seconds: the management API lists a queue of a closed connection for a moment.
async fn assert_nothing_created(vh: &str, before: &Objects, transient_ok: bool, what: &str) {
    let mut last = None;
    for _ in 0..25 {
        let now = objects(vh).await;
        let extra_queues: Vec<_> = now.queues.difference(&before.queues).cloned().collect();
        let transient: BTreeSet<&String> = extra_queues
            .iter()
            .filter(|(_, t)| *t && transient_ok)
            .map(|(n, _)| n)
            .collect();
        let lasting: Vec<_> = extra_queues
            .iter()
            .filter(|(n, _)| !transient.contains(n))
            .collect();
        let extra_bindings: Vec<_> = now
            .bindings
            .difference(&before.bindings)
            .filter(|(_, d, _)| !transient.contains(d))
            .collect();
        let extra_exchanges: Vec<_> = now.exchanges.difference(&before.exchanges).collect();
        if lasting.is_empty() && extra_bindings.is_empty() && extra_exchanges.is_empty() {
            assert!(
                before.queues.is_subset(&now.queues),
                "{what}: a queue disappeared"
            );
            return;
        }
        last = Some(format!(
            "queues {lasting:?}, exchanges {extra_exchanges:?}, bindings {extra_bindings:?}"
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} created: {}", last.unwrap_or_default());
}

fn amqp_url(vh: &str) -> String {
    format!("amqp://guest:guest@{}/{vh}", common::test_host_port())
}

/// Run the binary against vhost `vh` with a private data dir.
fn run(vh: &str, data: &Path, args: &[&str]) -> Output {
    common::bin()
        .args([
            "--url",
            &amqp_url(vh),
            "--mgmt-url",
            &common::test_mgmt_url(),
        ])
        .args(args)
        .env("HOPBACK_DATA_DIR", data)
        .env_remove("HOPBACK_LEDGER_STREAM")
        .env_remove("HOPBACK_LOG_FILE")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every read path on a fresh vhost (no ledger stream, no namespace), then on an existing
/// namespace: nothing declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_paths_declare_nothing() {
    let vh = make_vhost().await;
    let data = tempfile::tempdir().unwrap();
    let ns = common::unique_ns("rp");
    let before = objects(&vh).await;
    assert!(
        !before.queues.iter().any(|(n, _)| n == "hopback.ledger"),
        "a fresh vhost has no ledger stream"
    );

    // ── a fresh stream name and a fresh namespace ──
    for args in [
        vec!["--json", "check"],
        vec!["--read-only", "--json", "check"],
    ] {
        let o = run(&vh, data.path(), &args);
        let lines: Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
        let ledger = lines["checks"]
            .as_array()
            .and_then(|a| a.iter().find(|l| l["name"] == "ledger"))
            .cloned()
            .unwrap_or_else(|| panic!("no ledger line: {}", text(&o)));
        assert_eq!(ledger["status"], "warn", "{ledger}");
        assert!(
            ledger["detail"]
                .as_str()
                .unwrap()
                .contains("unknown: stream `hopback.ledger` does not exist"),
            "{ledger}"
        );
    }
    for args in [vec!["timeline"], vec!["history", &ns], vec!["postmortem"]] {
        let o = run(&vh, data.path(), &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("does not exist on this broker: the history is unknown"),
            "{args:?}: {}",
            text(&o)
        );
    }
    for args in [
        vec!["status"],
        vec!["status", &ns],
        vec!["gate", "show", &ns],
        vec!["dlq", "list", &ns],
        vec!["dlq", "show", &ns, "0"],
        vec!["--read-only", "timeline"],
    ] {
        let o = run(&vh, data.path(), &args);
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("panicked"),
            "{args:?}: {}",
            text(&o)
        );
    }
    assert_nothing_created(&vh, &before, false, "the CLI's read paths (fresh vhost)").await;

    // ── an existing namespace (made with the library: `init` journals, a read does not) ──
    let mut over = Overrides {
        url: Some(amqp_url(&vh)),
        mgmt_url: Some(common::test_mgmt_url()),
        ..Default::default()
    };
    let cfg = config::resolve(
        config::raw::RawConfig::default(),
        &PathBuf::from("/nonexistent/hopback-test.toml"),
        false,
        &over,
    )
    .unwrap();
    let session = common::connect(&cfg, "read paths").await;
    hopback::broker::topology::init(
        &session,
        &ns,
        &["v1".into(), "v2".into()],
        QueueType::Quorum,
    )
    .await
    .unwrap();
    let with_ns = objects(&vh).await;
    assert!(
        with_ns
            .queues
            .iter()
            .any(|(n, _)| n == &format!("{ns}.dlq"))
    );
    for args in [
        vec!["--json", "check"],
        vec!["--read-only", "check"],
        vec!["status", &ns],
        vec!["--read-only", "status", &ns],
        vec!["gate", "show", &ns],
        vec!["dlq", "list", &ns],
        vec!["dlq", "show", &ns, "0"],
        vec!["timeline"],
        vec!["history", &ns],
    ] {
        let o = run(&vh, data.path(), &args);
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("panicked"),
            "{args:?}: {}",
            text(&o)
        );
    }
    assert_nothing_created(
        &vh,
        &with_ns,
        false,
        "the CLI's read paths (existing namespace)",
    )
    .await;

    // ── the console in read-only: runner (ledger feed, timeline, DLQ page) and refresh tasks ──
    over.read_only = true;
    let ro = config::resolve(
        config::raw::RawConfig::default(),
        &PathBuf::from("/nonexistent/hopback-test.toml"),
        false,
        &over,
    )
    .unwrap();
    assert!(ro.profile.read_only);
    let (tx, mut rx) = mpsc::channel(256);
    let runner = OpsRunner::new(&ro, tx.clone());
    let feed = runner.spawn_ledger_feed();
    let tasks = hopback::app::tasks::spawn(&ro, tx);
    runner.handle(OpRequest::TimelineLoad { ns: None });
    runner.handle(OpRequest::DlqLoad {
        ns: ns.clone(),
        page: 0,
        page_size: 50,
    });
    let (mut timeline, mut page, mut down) = (None, false, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while timeline.is_none() || !page || down.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(m)) = tokio::time::timeout(left, rx.recv()).await else {
            panic!(
                "the read-only console did not answer: timeline {timeline:?}, page {page}, feed {down:?}"
            )
        };
        match m {
            Msg::Op(OpMsg::Timeline(r)) => timeline = Some(r),
            Msg::Op(OpMsg::DlqPage { result, .. }) => {
                assert!(result.is_ok(), "{result:?}");
                page = true;
            }
            Msg::Op(OpMsg::LedgerDown(why)) => down = Some(why),
            _ => {}
        }
    }
    let Some(Err(e)) = timeline else {
        panic!("a missing ledger is unknown, not an empty timeline: {timeline:?}")
    };
    assert!(e.text.contains("does not exist"), "{e:?}");
    assert!(down.unwrap().contains("does not exist"));
    // The tap's queue is exclusive and auto-delete: it may exist while the console runs.
    assert_nothing_created(&vh, &with_ns, true, "the read-only console").await;
    tasks.abort();
    feed.abort();

    session.close().await;
    drop_vhost(&vh).await;
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Every file under `dir` with its mode, and every directory.
fn walk(dir: &Path, files: &mut Vec<(PathBuf, u32)>, dirs: &mut Vec<(PathBuf, u32)>) {
    dirs.push((dir.to_path_buf(), mode(dir)));
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files, dirs);
        } else {
            files.push((p.clone(), mode(&p)));
        }
    }
}

/// The binary with `HOME` and XDG dirs in `home`: its default data dir is
/// `home/.local/share/hopback`.
fn run_home(home: &Path, stream: &str, args: &[&str]) -> Output {
    common::bin()
        .args(["--url", &common::test_url()])
        .args(args)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("HOPBACK_LEDGER_STREAM", stream)
        .env_remove("HOPBACK_DATA_DIR")
        .env_remove("HOPBACK_LOG_FILE")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_hopback_writes_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let share = home.join(".local/share");
    let data = share.join("hopback");
    // What an earlier hopback left: an open data dir, log, rotated log and fallback ledger.
    std::fs::create_dir_all(&data).unwrap();
    set_mode(&share, 0o755);
    set_mode(&data, 0o755);
    for f in ["hopback.log", "hopback.log.1", "ledger.jsonl"] {
        std::fs::write(data.join(f), b"").unwrap();
        set_mode(&data.join(f), 0o644);
    }
    let t = TestNs::new("files", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let stream = format!(
        "hopback.test-files-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    // A queue that is not a stream: a ledger named after it falls back to the local file.
    let not_stream = format!("{stream}-classic");
    hopback::broker::amqp::declare_queue(&t.session, "test", &not_stream, true, Default::default())
        .await
        .unwrap();

    // The stream ledger (a note creates it), read back through the local cache.
    let o = run_home(
        &home,
        &stream,
        &["note", "--namespace", &ns, "files", "test"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run_home(&home, &stream, &["timeline"]);
    assert!(o.status.success(), "{}", text(&o));
    // The fallback file.
    let o = run_home(
        &home,
        &not_stream,
        &["note", "--namespace", &ns, "fallback"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::read_to_string(data.join("ledger.jsonl"))
            .unwrap()
            .contains("fallback"),
        "the note went to the fallback file: {}",
        text(&o)
    );
    // A post-mortem (a rollback in the ledger) into a directory hopback makes, and over an open
    // file the operator had.
    let ledger = Ledger::open_stream(&t.session, &t.cfg, &stream).await;
    let mut e = ledger.event(EventKind::RollbackStarted, Some(&ns));
    e.params = serde_json::json!({"rollback_id": "rb-files"});
    ledger.append(e).await.unwrap();
    let fresh_pm = tmp.path().join("reports/pm.md");
    let old_pm = tmp.path().join("old.md");
    std::fs::write(&old_pm, b"old").unwrap();
    set_mode(&old_pm, 0o644);
    for pm in [&fresh_pm, &old_pm] {
        let o = run_home(
            &home,
            &stream,
            &[
                "postmortem",
                "--incident",
                "rb-files",
                "--output",
                pm.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(std::fs::read_to_string(pm).unwrap().contains("rb-files"));
        assert_eq!(mode(pm), 0o600, "{}", pm.display());
    }
    assert_eq!(mode(&tmp.path().join("reports")), 0o700);
    // An export (a purge of the empty DLQ exports first: an empty file).
    let o = run_home(&home, &stream, &["dlq", "purge", &ns, "--yes"]);
    assert!(o.status.success(), "{}", text(&o));

    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&data, &mut files, &mut dirs);
    let names: BTreeSet<String> = files
        .iter()
        .map(|(p, _)| p.strip_prefix(&data).unwrap().display().to_string())
        .collect();
    for want in ["hopback.log", "hopback.log.1", "ledger.jsonl"] {
        assert!(names.contains(want), "{want} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("ledger-cache/")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("exports/")), "{names:?}");
    assert!(
        std::fs::metadata(data.join("hopback.log")).unwrap().len() > 0,
        "the runs logged"
    );
    let loose: Vec<_> = files.iter().filter(|(_, m)| *m != 0o600).collect();
    assert!(loose.is_empty(), "files not 0600: {loose:?}");
    let open: Vec<_> = dirs.iter().filter(|(_, m)| *m != 0o700).collect();
    assert!(open.is_empty(), "directories not 0700: {open:?}");
    // Not hopback's: the parent of its data dir keeps its mode.
    assert_eq!(mode(&share), 0o755);

    let _ = hopback::ledger::delete_stream(&t.session, &stream).await;
    let _ = hopback::broker::amqp::delete_queue(&t.session, &not_stream).await;
    t.cleanup().await;
}
