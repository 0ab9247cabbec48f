//! Least privilege (README "Permissions"): broker users made for this test with the permission
//! lines README documents — read from README.md itself, so the table is what is tested — run
//! every read and every operation as a user would (the binary), and the outcome of each is the
//! one README's table gives. After every refusal the namespace (queues, depths, bindings) and
//! the ledger are what they were, read back as guest.
//!
//! - The four users of the table: monitoring (the watch line and the tag), no tag (the watch
//!   line), scoped to one namespace (`^NS(\..*)?$` for all three), scoped plus the ledger.
//! - Each use's own line (watch, ledger writer, gate, purge, replay, rollback, init/migrate) is
//!   enough for its commands, and `check` (as an administrator-tagged user with that line) says
//!   it can, and names what it cannot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod dlq_helpers;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestNs;
use common::users::{BrokerUser, mgmt_call, regex_escape, set_permissions_line};
use dlq_helpers::*;
use hopback::broker::topology::QueueType;

/// The `set_permissions` line README gives for `use_label` (`# watch: …` above it), for
/// namespace `ns` and ledger stream `stream`.
fn readme_line(use_label: &str, ns: &str, stream: &str) -> (String, String, String) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### Permissions")
        .nth(1)
        .expect("README has a Permissions section");
    let mut lines = section.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with(&format!("# {use_label}:")))
        .unwrap_or_else(|| panic!("README: no `# {use_label}:` line"));
    let line = lines
        .find(|l| l.starts_with("rabbitmqctl set_permissions"))
        .unwrap_or_else(|| panic!("README: no set_permissions line after `# {use_label}:`"));
    let subst = |re: String| {
        re.replace("hopback\\.ledger", "\u{1}")
            .replace("email", &regex_escape(ns))
            .replace('\u{1}', &regex_escape(stream))
    };
    let (c, w, r) = set_permissions_line(line);
    (subst(c), subst(w), subst(r))
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

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
            panic!("still running after {secs} s: {c:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&o).unwrap(),
        stderr: std::fs::read_to_string(&e).unwrap(),
    }
}

/// One namespace with 6 dead letters and 3 ready messages on v2, the gate on a 50/50 canary and
/// the ledger stream, all made as guest; a data dir of its own.
struct Fixture {
    t: TestNs,
    stream: String,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(prefix: &str) -> Self {
        let t = TestNs::new(prefix, &["v1", "v2"], QueueType::Classic).await;
        let f = Self {
            stream: format!("hopback.ledger.{}", t.ns),
            t,
            dir: tempfile::tempdir().unwrap(),
        };
        let ns = f.t.ns.clone();
        publish(
            &f.t.session,
            &format!("{ns}.v2"),
            &ids(&format!("{ns}-dead"), 6),
            &|id| id.as_bytes().to_vec(),
            None,
            true,
        )
        .await;
        wait_depth(&f.t.session, &format!("{ns}.dlq"), 6, 10).await;
        publish(
            &f.t.session,
            &format!("{ns}.v2"),
            &ids(&format!("{ns}-ready"), 3),
            &|id| id.as_bytes().to_vec(),
            None,
            false,
        )
        .await;
        let r = f.run(
            None,
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
        assert_eq!(r.code, Some(0), "setup: {r:?}");
        f
    }

    fn ns(&self) -> &str {
        &self.t.ns
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    /// The binary as `user` (guest without one), on this fixture's ledger and data dir.
    fn run(&self, user: Option<&BrokerUser>, args: &[&str]) -> Run {
        let mut c = match user {
            Some(u) => u.bin(),
            None => common::bin(),
        };
        c.env("HOPBACK_DATA_DIR", self.data())
            .env("HOPBACK_LEDGER_STREAM", &self.stream)
            .env("HOPBACK_LOG_FILE", self.data().join("hopback.log"))
            .args(args);
        let r = run_bounded(c, 90);
        if let Some(u) = user {
            assert!(
                !format!("{}{}", r.stdout, r.stderr).contains(&u.password),
                "password in the output of {args:?}"
            );
        }
        assert!(!r.stderr.contains("panicked"), "{args:?}: {r:?}");
        r
    }

    /// Queues (with depths), exchanges and bindings of the namespace.
    async fn state(&self) -> State {
        let ns = self.ns();
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
        let mut queues = BTreeMap::new();
        for q in names("/api/queues/%2F?columns=name") {
            let d = depth(&self.t.session, &q).await;
            queues.insert(q, d);
        }
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
            // Consoles elsewhere bind their dead-letter tap (`amq.gen-…`) to every DLX.
            .filter(|(s, d, _)| (mine(s) || mine(d)) && !d.starts_with("amq.gen-"))
            .collect();
        bindings.sort();
        State {
            queues,
            exchanges,
            bindings,
        }
    }

    async fn cleanup(self) {
        delete_queues(&self.t.session, &[self.stream.as_str()]).await;
        let ns = self.t.ns.clone();
        // What an operation may have added (the parking queue).
        delete_queues(&self.t.session, &[&format!("{ns}.parked")]).await;
        self.t.cleanup().await;
    }
}

/// The end of the binary's log (what a failed expectation shows).
fn log_tail(data: &Path) -> String {
    let log = std::fs::read_to_string(data.join("hopback.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The ledger (read as guest) holds no event whose broker-verified author is `user`: its
/// refusals journaled nothing.
fn journaled_nothing(f: &Fixture, user: &BrokerUser) {
    let r = f.run(None, &["--json", "timeline", "--namespace", f.ns()]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        !r.stdout.contains(&user.name),
        "a refused user's event is in the ledger: {}",
        r.stdout
    );
}

#[derive(Debug, PartialEq)]
struct State {
    queues: BTreeMap<String, u32>,
    exchanges: Vec<String>,
    bindings: Vec<(String, String, String)>,
}

/// The commands of README's table, by row, for namespace `ns`.
fn command(row: &str, ns: &str, export: &str) -> Vec<String> {
    let v: Vec<&str> = match row {
        "status" => vec!["status"],
        "status NS" => vec!["status", ns],
        "gate show" => vec!["gate", "show", ns],
        "dlq list" => vec!["dlq", "list", ns],
        "dlq show" => vec!["dlq", "show", ns, "0"],
        "timeline" => vec!["timeline", "--namespace", ns],
        "note" => vec!["note", "least privilege", "--namespace", ns],
        "gate set" => vec![
            "gate",
            "set",
            ns,
            "v1=100",
            "--yes",
            "--force-zero-consumers",
        ],
        "dlq replay" => vec!["dlq", "replay", ns, "--to", "v1", "--yes"],
        "dlq purge" => vec!["dlq", "purge", ns, "--export", export, "--yes"],
        "rollback" => vec![
            "rollback",
            ns,
            "--to",
            "v1",
            "--yes",
            "--verify-window",
            "1s",
        ],
        "init" => vec!["init", ns, "--versions", "v1,v2", "--queue-type", "classic"],
        "migrate" => vec!["migrate", ns, "--yes"],
        other => panic!("no row {other}"),
    };
    v.into_iter().map(str::to_string).collect()
}

/// Run README's rows in order as `user`, each with its expected exit code; a refusal (3) must
/// change nothing in the namespace.
async fn rows(f: &Fixture, user: &BrokerUser, label: &str, expected: &[(&str, i32)]) {
    let export = f.data().join(format!("{label}-purge.jsonl"));
    let export = export.to_str().unwrap().to_string();
    for (row, want) in expected {
        let before = f.state().await;
        let args = command(row, f.ns(), &export);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = f.run(Some(user), &args);
        assert_eq!(
            r.code,
            Some(*want),
            "{label} `{row}`: expected exit {want} (README \"Permissions\"): {r:?}\nlog: {}",
            log_tail(f.data())
        );
        if *want == 3 {
            assert!(
                !r.stderr.contains("the change is real"),
                "{label} `{row}`: a refusal claims a change: {r:?}"
            );
            assert!(r.stderr.contains("hint"), "{label} `{row}`: no hint: {r:?}");
            let after = f.state().await;
            assert_eq!(
                after, before,
                "{label} `{row}` was refused but changed something"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_user_with_the_watch_line() {
    let f = Fixture::new("lp-mon").await;
    let (c, w, r) = readme_line("watch", f.ns(), &f.stream);
    let user = BrokerUser::create("lp-mon", "monitoring", &c, &w, &r);
    rows(
        &f,
        &user,
        "monitoring",
        &[
            ("status", 0),
            ("status NS", 0),
            ("gate show", 0),
            ("dlq list", 0),
            ("dlq show", 0),
            ("timeline", 0),
            ("note", 3),
            ("gate set", 3),
            ("dlq purge", 3),
            ("dlq replay", 3),
            ("rollback", 3),
            ("init", 3),
            ("migrate", 0),
        ],
    )
    .await;
    journaled_nothing(&f, &user);
    drop(user);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_without_a_tag_reads_over_amqp_and_the_api_refusal_exits_3_everywhere() {
    let f = Fixture::new("lp-notag").await;
    let (c, w, r) = readme_line("watch", f.ns(), &f.stream);
    let user = BrokerUser::create("lp-notag", "", &c, &w, &r);
    rows(
        &f,
        &user,
        "no tag",
        &[
            ("status", 3),
            ("status NS", 0),
            ("gate show", 3),
            ("dlq list", 3),
            ("dlq show", 3),
            ("timeline", 0),
            ("note", 3),
            ("gate set", 3),
            ("dlq purge", 3),
            ("dlq replay", 3),
            ("rollback", 3),
            ("init", 3),
            ("migrate", 3),
        ],
    )
    .await;
    // The management API's refusal is named as such.
    let r = f.run(Some(&user), &["gate", "show", f.ns()]);
    assert!(r.stderr.contains("permission denied"), "{r:?}");
    journaled_nothing(&f, &user);
    drop(user);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_user_sees_its_namespace_and_every_operation_is_refused_without_the_ledger() {
    let f = Fixture::new("lp-scoped").await;
    let other = TestNs::new("lp-other", &["v1", "v2"], QueueType::Classic).await;
    publish(
        &other.session,
        &format!("{}.v2", other.ns),
        &ids("theirs", 2),
        &|id| id.as_bytes().to_vec(),
        None,
        true,
    )
    .await;
    let scoped = format!("^{}(\\..*)?$", regex_escape(f.ns()));
    let user = BrokerUser::create("lp-scoped", "monitoring", &scoped, &scoped, &scoped);
    // `status` of every namespace: its own in full, another team's marked, a warning, exit 0.
    let r = f.run(Some(&user), &["--json", "status"]);
    assert_eq!(r.code, Some(0), "scoped status: {r:?}");
    let snap: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let find = |name: &str| {
        snap["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in status: {}", r.stdout))
    };
    let mine = find(f.ns());
    assert!(mine.get("no_permission").is_none(), "{mine}");
    assert_eq!(mine["dlq_depth"], 6, "{mine}");
    let theirs = find(&other.ns);
    assert!(
        theirs["no_permission"]
            .as_str()
            .is_some_and(|w| w.contains("READ permission") && w.contains(&other.ns)),
        "{theirs}"
    );
    assert!(
        r.stderr.contains("warning:") && r.stderr.contains(&other.ns),
        "{r:?}"
    );
    rows(
        &f,
        &user,
        "scoped",
        &[
            ("status NS", 0),
            ("gate show", 0),
            ("dlq list", 0),
            ("dlq show", 0),
            ("timeline", 3),
            ("note", 3),
            ("gate set", 3),
            ("dlq purge", 3),
            ("dlq replay", 3),
            ("rollback", 3),
            ("init", 0),
            ("migrate", 0),
        ],
    )
    .await;
    // The purge got past its write probe (WRITE on the DLQ): the refusal names the ledger, not
    // an object outside the user's names.
    let r = f.run(Some(&user), &["dlq", "purge", f.ns(), "--yes"]);
    assert!(r.stderr.contains("ledger"), "{r:?}");
    assert!(!r.stderr.contains("write-probe"), "{r:?}");
    journaled_nothing(&f, &user);
    drop(user);
    other.cleanup().await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_plus_ledger_user_flips_purges_and_inits_and_replays_are_refused() {
    let f = Fixture::new("lp-writer").await;
    let re = format!(
        "^({}(\\..*)?|{})$",
        regex_escape(f.ns()),
        regex_escape(&f.stream)
    );
    let user = BrokerUser::create("lp-writer", "monitoring", &re, &re, &re);
    rows(
        &f,
        &user,
        "scoped + ledger",
        &[
            ("status NS", 0),
            ("gate show", 0),
            ("dlq list", 0),
            ("timeline", 0),
            ("note", 0),
            ("dlq replay", 3),
            // Refused before its gate step: the plan moves messages, and the user may not
            // publish through the default exchange (nothing changes — `rows` reads it back).
            ("rollback", 3),
            ("gate set", 0),
            ("dlq purge", 0),
            ("init", 0),
            ("migrate", 0),
        ],
    )
    .await;
    assert_eq!(depth(&f.t.session, &format!("{}.dlq", f.ns())).await, 0);
    // The rollback was refused by its permission check, before its first step, not by the move.
    let mut args = command("rollback", f.ns(), "");
    args.extend(["--from".to_string(), "v2".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = f.run(Some(&user), &args);
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("default exchange") && r.stderr.contains("nothing was changed"),
        "{r:?}"
    );
    // The timeline (as guest) has the writer's note.
    let r = f.run(None, &["--json", "timeline", "--namespace", f.ns()]);
    assert!(r.stdout.contains("least privilege"), "{r:?}");
    drop(user);
    f.cleanup().await;
}

/// `check` as an administrator-tagged user holding `use_label`'s line: the capability is
/// `can` for the fixture's namespace, and `others` are `cannot`.
async fn check_says(f: &Fixture, use_label: &str, can: &[&str], cannot: &[&str]) {
    let (c, w, r) = readme_line(use_label, f.ns(), &f.stream);
    let admin = BrokerUser::create("lp-adm", "administrator", &c, &w, &r);
    let out = f.run(Some(&admin), &["--json", "check"]);
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("check --json: {e}: {out:?}"));
    let line = |cap: &str| {
        let name = if cap == "ledger writer" {
            "can write the ledger".to_string()
        } else {
            format!("{}: {cap}", f.ns())
        };
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no `{name}` in {}", out.stdout))
    };
    for cap in can {
        let l = line(cap);
        assert_eq!(l["detail"], "can", "{use_label} line, {cap}: {l}");
    }
    for cap in cannot {
        let l = line(cap);
        assert!(
            l["detail"].as_str().unwrap().starts_with("cannot: missing"),
            "{use_label} line, {cap}: {l}"
        );
    }
}

/// Each README line is enough for its use's commands (run as a `monitoring` user holding
/// exactly it), and the next use's command is refused with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_readme_line_is_enough_for_its_use() {
    let f = Fixture::new("lp-lines").await;
    let user = |label: &str| {
        let (c, w, r) = readme_line(label, f.ns(), &f.stream);
        BrokerUser::create("lp-line", "monitoring", &c, &w, &r)
    };
    let u = user("watch");
    rows(
        &f,
        &u,
        "watch line",
        &[
            ("status NS", 0),
            ("dlq show", 0),
            ("timeline", 0),
            ("note", 3),
        ],
    )
    .await;
    let u = user("ledger writer");
    rows(
        &f,
        &u,
        "ledger writer line",
        &[("note", 0), ("gate set", 3)],
    )
    .await;
    let u = user("gate");
    rows(&f, &u, "gate line", &[("gate set", 0), ("dlq replay", 3)]).await;
    let u = user("replay");
    rows(&f, &u, "replay line", &[("dlq replay", 0), ("gate set", 3)]).await;
    assert_eq!(depth(&f.t.session, &format!("{}.dlq", f.ns())).await, 0);
    assert_eq!(depth(&f.t.session, &format!("{}.v1", f.ns())).await, 6);
    drop(u);
    check_says(&f, "watch", &["watch"], &["ledger writer", "gate", "purge"]).await;
    check_says(
        &f,
        "gate",
        &["watch", "ledger writer", "gate"],
        &["purge", "replay"],
    )
    .await;
    check_says(&f, "replay", &["watch", "replay"], &["gate", "purge"]).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_rollback_and_init_lines_are_enough_for_their_use() {
    let f = Fixture::new("lp-lines2").await;
    let user = |label: &str| {
        let (c, w, r) = readme_line(label, f.ns(), &f.stream);
        BrokerUser::create("lp-line", "monitoring", &c, &w, &r)
    };
    let u = user("purge");
    rows(&f, &u, "purge line", &[("dlq purge", 0), ("gate set", 3)]).await;
    assert_eq!(depth(&f.t.session, &format!("{}.dlq", f.ns())).await, 0);
    publish(
        &f.t.session,
        &format!("{}.v2", f.ns()),
        &ids("again", 2),
        &|id| id.as_bytes().to_vec(),
        None,
        true,
    )
    .await;
    // A fresh namespace, made by the init/migrate line's user.
    let fresh = common::unique_ns("lp-init");
    let (c, w, r) = readme_line("init/migrate", &fresh, &f.stream);
    let u = BrokerUser::create("lp-line", "monitoring", &c, &w, &r);
    let out = f.run(
        Some(&u),
        &[
            "init",
            &fresh,
            "--versions",
            "v1,v2",
            "--queue-type",
            "classic",
        ],
    );
    assert_eq!(
        out.code,
        Some(0),
        "init line: {out:?}\nlog: {}",
        log_tail(f.data())
    );
    assert!(f.t.session.exchange_exists(&fresh).await.unwrap());
    let out = f.run(Some(&u), &["migrate", &fresh, "--yes"]);
    assert_eq!(out.code, Some(0), "migrate line: {out:?}");
    hopback::broker::topology::delete_namespace(
        &f.t.session,
        &fresh,
        &["v1".to_string(), "v2".to_string()],
    )
    .await
    .unwrap();
    drop(u);
    check_says(
        &f,
        "purge",
        &["watch", "ledger writer", "purge"],
        &["gate", "replay"],
    )
    .await;
    check_says(
        &f,
        "rollback",
        &["watch", "ledger writer", "gate", "replay", "rollback"],
        &["purge", "init/migrate"],
    )
    .await;
    check_says(
        &f,
        "init/migrate",
        &["watch", "ledger writer", "init/migrate"],
        &[],
    )
    .await;
    f.cleanup().await;
}
