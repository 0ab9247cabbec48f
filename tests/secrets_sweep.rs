//! Credentials appear nowhere: a broker user whose password is a sentinel drives the commands that
//! write to every output channel — stdout (human and `--json`), stderr, the log file at debug
//! level, ledger events (read back with `timeline --format json`), the drill's and `postmortem`'s
//! Markdown, and the data dir — and every byte of all of them is searched for the sentinel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl (scripts/broker installs it)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn files_below(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_below(&p, out)
        } else {
            out.push(p)
        }
    }
}

#[test]
fn a_sentinel_password_never_leaks_anywhere() {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let user = format!("hb-secret-{id}");
    let sentinel = format!("Sentinel{id}Pw");
    rabbitmqctl(&["add_user", &user, &sentinel]);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]);
    rabbitmqctl(&["set_user_tags", &user, "administrator"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("hopback.log");
    let stream = format!("hopback.ledger.t-secret-{id}");
    let ns = format!("t-secret-{id}");
    let url = format!("amqp://{user}:{sentinel}@127.0.0.1:5672/%2f");
    let pm = dir.path().join("pm.md");
    let run = |args: &[&str], env_url: bool| {
        let mut c = common::bin();
        c.env("HOPBACK_DATA_DIR", &data)
            .env("HOPBACK_LOG_FILE", &log)
            .env("HOPBACK_LOG", "debug")
            .env("HOPBACK_LEDGER_STREAM", &stream);
        if env_url {
            c.env("HOPBACK_URL", &url);
        } else {
            c.arg("--url").arg(&url);
        }
        let out = c.args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let mut seen = Vec::new();
    for (args, env_url, want_ok) in [
        (vec!["check"], false, true),
        (vec!["--json", "check"], true, true),
        (
            vec![
                "init",
                &ns,
                "--versions",
                "v1,v2",
                "--queue-type",
                "classic",
            ],
            false,
            true,
        ),
        (vec!["--json", "status", &ns], true, true),
        (
            vec![
                "gate",
                "set",
                &ns,
                "v1=90",
                "v2=10",
                "--yes",
                "--force-zero-consumers",
                "--reason",
                "secret sweep",
            ],
            false,
            true,
        ),
        (vec!["--json", "gate", "show", &ns], true, true),
        (
            vec!["note", "--namespace", &ns, "sweeping for secrets"],
            false,
            true,
        ),
        (vec!["--json", "dlq", "list", &ns], true, true),
        (
            vec![
                "drill",
                "--headless",
                "--scenario",
                "poison",
                "--fault-after",
                "1s",
                "--auto-respond-after",
                "1s",
                "--rate",
                "40",
            ],
            false,
            true,
        ),
        (
            vec!["postmortem", "--output", pm.to_str().unwrap()],
            true,
            true,
        ),
        (vec!["--json", "timeline"], false, true),
        (vec!["timeline", "--format", "md"], true, true),
        (vec!["gate", "set", &ns, "v9=1", "--yes"], false, false),
    ] {
        let (code, text) = run(&args, env_url);
        assert_eq!(code == Some(0), want_ok, "{args:?} exited {code:?}: {text}");
        seen.push((format!("{args:?}"), text));
    }
    // A failed login must not echo the password either.
    let mut c = common::bin();
    let out = c
        .env("HOPBACK_LOG_FILE", &log)
        .args([
            "--url",
            &format!("amqp://{user}:{sentinel}x@127.0.0.1:5672/%2f"),
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    seen.push((
        "failed login".into(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ));

    let timeline = &seen
        .iter()
        .find(|(a, _)| a.contains("\"--json\", \"timeline\""))
        .unwrap()
        .1;
    assert!(
        timeline.contains("sweeping for secrets") && timeline.contains("gate"),
        "the ledger was read back: {timeline}"
    );
    let mut files = vec![log.clone(), pm.clone()];
    files_below(&data, &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "md") && f != &pm),
        "the drill wrote its post-mortem to the data dir: {files:?}"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&sentinel),
            "password leaked in {}",
            f.display()
        );
    }
    for (what, text) in &seen {
        assert!(
            !text.contains(&sentinel),
            "password leaked in the output of {what}: {text}"
        );
    }
    assert!(
        std::fs::read_to_string(&log).unwrap().len() > 100,
        "the log file was written"
    );

    let cfg = common::test_config();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = common::connect(&cfg, "test").await;
        hopback::broker::topology::delete_namespace(&s, &ns, &["v1".into(), "v2".into()])
            .await
            .unwrap();
        hopback::ledger::delete_stream(&s, &stream).await.unwrap();
        s.close().await;
    });
    rabbitmqctl(&["delete_user", &user]);
}
