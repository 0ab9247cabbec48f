//! Least privilege (issue 36, README "Permissions"): users with the documented permission sets,
//! each created for this test through the management API and deleted at the end (also on
//! failure), against the default broker.
//!
//! - watch (`monitoring` tag, read on `^(NS(\..*)?|LEDGER)$`): status, gate, dead letters and
//!   timeline work; every mutation is refused (exit 3) with nothing changed.
//! - no tag, read-only permissions: the management API refuses it (401), and the commands that
//!   need the API refuse too — exit 3 from `gate show` and `dlq list` alike.
//! - scoped to one namespace (`^NS(\..*)?$`, monitoring tag): `status` shows its namespace and
//!   marks another team's "no permission" (exit 0, a warning); without the ledger every operation
//!   is refused before it acts (exit 3), a note included — never "the change is real".
//! - scoped plus its ledger (`^(NS(\..*)?|LEDGER)$`): gate flip, note and purge work; the
//!   purge's write probe needs nothing outside those names.
//!
//! After every refusal the DLQ's depth and the gate's bindings are what they were (read as guest).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod dlq_helpers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestNs;
use dlq_helpers::*;
use hopback::broker::topology::QueueType;

fn curl(method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-u", "guest:guest"])
        .args(["-X", method, "-H", "content-type: application/json"]);
    if let Some(b) = body {
        c.args(["-d", b]);
    }
    let out = c
        .arg(format!("{}{path}", common::test_mgmt_url()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A broker user for this test only; deleted on drop.
struct User {
    name: String,
    password: String,
}

impl User {
    fn new(kind: &str, tags: &str, configure: &str, write: &str, read: &str) -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let name = format!("hb-lp-{kind}-{id}");
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let (code, body) = curl(
            "PUT",
            &format!("/api/users/{name}"),
            Some(&serde_json::json!({"password": password, "tags": tags}).to_string()),
        );
        assert!((200..300).contains(&code), "create user: {code} {body}");
        let user = Self { name, password };
        let (code, body) = curl(
            "PUT",
            &format!("/api/permissions/%2F/{}", user.name),
            Some(
                &serde_json::json!({"configure": configure, "write": write, "read": read})
                    .to_string(),
            ),
        );
        assert!((200..300).contains(&code), "set permissions: {code} {body}");
        user
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = curl("DELETE", &format!("/api/users/{}", self.name), None);
    }
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

fn run(user: Option<&User>, data: &Path, stream: &str, args: &[&str]) -> Run {
    let mut c = common::bin();
    c.env("HOPBACK_DATA_DIR", data)
        .env("HOPBACK_LEDGER_STREAM", stream)
        .env("HOPBACK_LOG_FILE", data.join("hopback.log"));
    if let Some(u) = user {
        c.env("HOPBACK_PASSWORD", &u.password)
            .arg("--url")
            .arg(format!(
                "amqp://{}@{}/%2f",
                u.name,
                common::test_host_port()
            ))
            .arg("--mgmt-url")
            .arg(common::test_mgmt_url());
    }
    c.args(args);
    let r = run_bounded(c, 60);
    if let Some(u) = user {
        assert!(
            !format!("{}{}", r.stdout, r.stderr).contains(&u.password),
            "password in the output of {args:?}"
        );
    }
    r
}

/// The gate's bindings (routing keys by destination) as guest sees them.
fn gate_bindings(ns: &str) -> Vec<(String, String)> {
    let (code, body) = curl(
        "GET",
        &format!("/api/exchanges/%2F/{ns}/bindings/source"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let mut b: Vec<(String, String)> = v
        .iter()
        .map(|b| {
            (
                b["destination"].as_str().unwrap().to_string(),
                b["routing_key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    b.sort();
    b
}

fn refused(r: &Run, what: &str) {
    assert_eq!(r.code, Some(3), "{what} should be refused (exit 3): {r:?}");
    assert!(
        !r.stderr.contains("the change is real"),
        "{what}: a refusal claims a change: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_documented_permission_set_gets_exactly_its_reads_and_operations() {
    let t = TestNs::new("lp", &["v1", "v2"], QueueType::Classic).await;
    let other = TestNs::new("lpo", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let stream = format!("hopback.ledger.{ns}");
    let dlq = format!("{ns}.dlq");
    // 6 dead letters in each namespace (as guest); the ledger stream declared by guest.
    for (n, who) in [(&t, "mine"), (&other, "theirs")] {
        publish(
            &n.session,
            &format!("{}.v2", n.ns),
            &ids(who, 6),
            &|id| id.as_bytes().to_vec(),
            None,
            true,
        )
        .await;
        wait_depth(&n.session, &format!("{}.dlq", n.ns), 6, 10).await;
    }
    let r = run(None, data, &stream, &["note", "setup", "--namespace", &ns]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let gate_before = gate_bindings(&ns);

    let q = regex_escape(&ns);
    let scoped_re = format!("^{q}(\\..*)?$");
    let ledger_re = format!("^({q}(\\..*)?|{})$", regex_escape(&stream));
    // README "Permissions", watch: the monitoring tag and read on the namespace and the ledger.
    let watch_re = format!("^({q}(\\..*)?|{})$", regex_escape(&stream));
    let monitoring = User::new("mon", "monitoring", "", "", &watch_re);
    let no_tag = User::new("notag", "", "", "", ".*");
    let scoped = User::new("scoped", "monitoring", &scoped_re, &scoped_re, &scoped_re);
    let writer = User::new("writer", "monitoring", &ledger_re, &ledger_re, &ledger_re);

    // Watching: the monitoring user reads status and the gate.
    for args in [
        vec!["status", ns.as_str()],
        vec!["gate", "show", &ns],
        vec!["dlq", "list", &ns],
        vec!["timeline", "--namespace", &ns],
    ] {
        let r = run(Some(&monitoring), data, &stream, &args);
        assert_eq!(r.code, Some(0), "monitoring {args:?}: {r:?}");
    }
    // Without a tag the management API refuses: every command that needs it is refused alike.
    for args in [vec!["gate", "show", ns.as_str()], vec!["dlq", "list", &ns]] {
        let r = run(Some(&no_tag), data, &stream, &args);
        refused(&r, &format!("no-tag {args:?}"));
        assert!(r.stderr.contains("permission denied"), "{r:?}");
    }
    // Scoped: status of every namespace shows its own and marks the other team's.
    let r = run(Some(&scoped), data, &stream, &["--json", "status"]);
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
    let mine = find(&ns);
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

    // `check` per capability: an administrator-tagged user (who may read its permissions)
    // scoped to the namespace is told it can purge and flip the gate there but cannot write the
    // ledger; a user who may not read its permissions is told that, never "read only".
    let admin_scoped = User::new("adm", "administrator", &scoped_re, &scoped_re, &scoped_re);
    let r = run(Some(&admin_scoped), data, &stream, &["--json", "check"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let check = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no `{name}` in {}", r.stdout))
    };
    let ledger = check("can write the ledger");
    assert_eq!(ledger["status"], "warn", "{ledger}");
    assert!(
        ledger["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("no CONFIGURE on `{stream}`")),
        "{ledger}"
    );
    let r = run(Some(&scoped), data, &stream, &["check"]);
    assert!(
        !r.stdout.contains("read only") && !r.stdout.contains("read-only use"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("is unknown until the broker answers"),
        "{r:?}"
    );

    // Refusals change nothing: the monitoring user, and the scoped user without the ledger.
    for (user, label) in [(&monitoring, "monitoring"), (&scoped, "scoped")] {
        for args in [
            vec!["dlq", "purge", ns.as_str(), "--yes"],
            vec![
                "gate",
                "set",
                &ns,
                "v1=50",
                "v2=50",
                "--yes",
                "--force-zero-consumers",
            ],
            vec!["note", "not journaled", "--namespace", &ns],
        ] {
            let r = run(Some(user), data, &stream, &args);
            refused(&r, &format!("{label} {args:?}"));
            assert_eq!(depth(&t.session, &dlq).await, 6, "{label} {args:?}");
            assert_eq!(gate_bindings(&ns), gate_before, "{label} {args:?}");
        }
    }
    // The scoped user's purge got past its write probe (it has WRITE on the DLQ): the refusal
    // names the ledger, not an exchange outside its names.
    let r = run(
        Some(&scoped),
        data,
        &stream,
        &["dlq", "purge", &ns, "--yes"],
    );
    assert!(r.stderr.contains("ledger"), "{r:?}");
    assert!(!r.stderr.contains("write-probe"), "{r:?}");

    // Scoped plus its ledger: every operation works.
    let r = run(
        Some(&writer),
        data,
        &stream,
        &["note", "from the writer", "--namespace", &ns],
    );
    assert_eq!(r.code, Some(0), "writer note: {r:?}");
    let r = run(
        Some(&writer),
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
    assert_eq!(r.code, Some(0), "writer gate set: {r:?}");
    assert_ne!(gate_bindings(&ns), gate_before);
    let export = data.join("purge.jsonl");
    let r = run(
        Some(&writer),
        data,
        &stream,
        &[
            "dlq",
            "purge",
            &ns,
            "--export",
            export.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(r.code, Some(0), "writer purge: {r:?}");
    assert_eq!(depth(&t.session, &dlq).await, 0);
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(exported.lines().filter(|l| l.contains("mine-")).count(), 6);
    // The timeline (read as guest) has the writer's events and none of the refused ones.
    let r = run(
        None,
        data,
        &stream,
        &["--json", "timeline", "--namespace", &ns],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("from the writer"), "{}", r.stdout);
    assert!(!r.stdout.contains("not journaled"), "{}", r.stdout);

    delete_queues(&t.session, &[stream.as_str()]).await;
    other.cleanup().await;
    t.cleanup().await;
}

/// `s` as a literal in a PCRE regex.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}
