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

/// Run the binary with `HOPBACK_TEST_PANIC=cli` (debug builds panic right after loading the
/// config, with the whole resolved config in the message) and return (exit code, stderr).
fn panic_run(config: &Path, log: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = common::bin();
    c.env("HOPBACK_TEST_PANIC", "cli")
        .env("HOPBACK_LOG_FILE", log)
        .arg("--config")
        .arg(config)
        .arg("status");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_panic_report_never_shows_the_password() {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let sentinel = format!("PanicSentinel{id}Pw");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hopback.log");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, format!("{sentinel}\n")).unwrap();
    // The password in each place it can come from: the URL, a file, an env var, HOPBACK_PASSWORD.
    let configs = [
        (
            "url",
            format!("default_profile = \"p\"\n[profiles.p]\nurl = \"amqp://ops:{sentinel}@127.0.0.1:5672/%2f\"\n"),
        ),
        (
            "password_file",
            format!(
                "default_profile = \"p\"\n[profiles.p]\nurl = \"amqp://ops@127.0.0.1:5672/%2f\"\npassword_file = \"{}\"\n",
                pw_file.display()
            ),
        ),
        (
            "password_env",
            "default_profile = \"p\"\n[profiles.p]\nurl = \"amqp://ops@127.0.0.1:5672/%2f\"\npassword_env = \"HB_PANIC_PW\"\n".to_string(),
        ),
        (
            "HOPBACK_PASSWORD",
            "default_profile = \"p\"\n[profiles.p]\nurl = \"amqp://ops@127.0.0.1:5672/%2f\"\n".to_string(),
        ),
    ];
    for (source, text) in &configs {
        let cfg = dir.path().join(format!("{source}.toml"));
        std::fs::write(&cfg, text).unwrap();
        for backtrace in ["0", "1", "full"] {
            let (code, out) = panic_run(
                &cfg,
                &log,
                &[
                    ("RUST_BACKTRACE", backtrace),
                    ("HB_PANIC_PW", &sentinel),
                    (
                        "HOPBACK_PASSWORD",
                        if *source == "HOPBACK_PASSWORD" {
                            &sentinel
                        } else {
                            ""
                        },
                    ),
                ],
            );
            // It really panicked, through the hook, with the config in the message.
            assert_eq!(
                code,
                Some(101),
                "{source} RUST_BACKTRACE={backtrace}: {out}"
            );
            assert!(
                out.contains("HOPBACK_TEST_PANIC") && out.contains("Secret(***)"),
                "{source} RUST_BACKTRACE={backtrace}: not the deliberate panic: {out}"
            );
            if backtrace != "0" {
                assert!(out.contains("BACKTRACE"), "{source}: no backtrace: {out}");
            }
            assert!(
                !out.contains(&sentinel),
                "{source} RUST_BACKTRACE={backtrace}: the password is in the panic report: {out}"
            );
        }
    }
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains(&sentinel), "the password is in the log");
}

/// Passwords work from a file, from a named env var and from HOPBACK_PASSWORD, not only the URL
/// (a wrong one is refused, so the password really is the one used).
#[test]
fn passwords_come_from_a_file_or_the_environment() {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let user = format!("hb-pwsrc-{id}");
    let password = format!("Src{id}Pw");
    rabbitmqctl(&["add_user", &user, &password]);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, "", "", ".*"]);
    // `status` lists namespaces through the management API (without it, it now says "cannot
    // list namespaces" and exits 1): the tag lets every password source be checked end to end.
    rabbitmqctl(&["set_user_tags", &user, "monitoring"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hopback.log");
    let pw_file = dir.path().join("pw");
    let url = format!("amqp://{user}@127.0.0.1:5672/%2f");
    let run = |config: &str, env: &[(&str, &str)]| {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut c = common::bin();
        c.env("HOPBACK_LOG_FILE", &log)
            .arg("--config")
            .arg(&cfg)
            .args(["status", "--no-attribution"]);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains(&password), "password in the output: {text}");
        (out.status.code(), text)
    };
    let base = format!("default_profile = \"p\"\n[profiles.p]\nurl = \"{url}\"\n");
    // A file (first line; the newline is not part of it).
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let with_file = format!("{base}password_file = \"{}\"\n", pw_file.display());
    let (code, text) = run(&with_file, &[]);
    assert_eq!(code, Some(0), "password_file: {text}");
    // A named environment variable.
    let with_env = format!("{base}password_env = \"HB_SRC_PW\"\n");
    let (code, text) = run(&with_env, &[("HB_SRC_PW", &password)]);
    assert_eq!(code, Some(0), "password_env: {text}");
    // HOPBACK_PASSWORD with a URL that has no password.
    let (code, text) = run(&base, &[("HOPBACK_PASSWORD", &password)]);
    assert_eq!(code, Some(0), "HOPBACK_PASSWORD: {text}");
    // The wrong password from each source is refused: the source is really what is used.
    std::fs::write(&pw_file, "wrong\n").unwrap();
    let (code, text) = run(&with_file, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refused the login"), "{text}");
    let (code, text) = run(&with_env, &[("HB_SRC_PW", "wrong")]);
    assert_eq!(code, Some(1), "{text}");
    // A password_env naming an unset variable is a usage error that says which.
    let (code, text) = run(&with_env, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("HB_SRC_PW"), "{text}");
    rabbitmqctl(&["delete_user", &user]);
}

/// A panic while the console holds the terminal (raw mode, alternate screen): the terminal is
/// restored before the report is printed, the report has no password, and the shell answers.
#[test]
fn a_console_panic_restores_the_terminal_and_shows_no_password() {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let sentinel = format!("TuiSentinel{id}Pw");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("default_profile = \"p\"\n[profiles.p]\nurl = \"amqp://guest:{sentinel}@127.0.0.1:5672/%2f\"\n"),
    )
    .unwrap();
    let session = format!("hb-panic-{id}");
    let tmux = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("tmux").args(args).output().unwrap().stdout)
            .into_owned()
    };
    let st = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session, "-x", "120", "-y", "40"])
        .args(["-e", "HOPBACK_TEST_PANIC=tui", "-e", "RUST_BACKTRACE=1"])
        .args([
            "-e",
            &format!("HOPBACK_LOG_FILE={}", dir.path().join("log").display()),
        ])
        .args([
            "-e",
            &format!("HOPBACK_DATA_DIR={}", dir.path().join("data").display()),
        ])
        .args(["-e", "TERM=xterm-256color", "sh"])
        .status()
        .unwrap();
    assert!(st.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .status();
        }
    }
    let _kill = Kill(session.clone());
    let cmd = format!(
        "{} --config {} ; echo EXITED $?",
        env!("CARGO_BIN_EXE_hopback"),
        cfg.display()
    );
    tmux(&["send-keys", "-t", &session, "-l", &cmd]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    // The console comes up (alternate screen on)…
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut was_on = false;
    let screen = loop {
        if tmux(&["display", "-p", "-t", &session, "#{alternate_on}"]).trim() == "1" {
            was_on = true;
        }
        let s = tmux(&["capture-pane", "-p", "-S", "-", "-t", &session]);
        // The typed command line also reads `echo EXITED $?`: wait for the printed status.
        if s.lines()
            .any(|l| l.starts_with("EXITED ") && !l.contains('$'))
        {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no exit: {s}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(was_on, "the console never entered the alternate screen");
    // …panics, and the terminal is back.
    assert!(screen.contains("EXITED 101"), "{screen}");
    assert!(screen.contains("HOPBACK_TEST_PANIC"), "{screen}");
    assert!(
        !screen.contains(&sentinel),
        "password in the panic report: {screen}"
    );
    assert_eq!(
        tmux(&["display", "-p", "-t", &session, "#{alternate_on}"]).trim(),
        "0",
        "still in the alternate screen"
    );
    tmux(&["send-keys", "-t", &session, "-l", "echo PROMPT-OK"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = tmux(&["capture-pane", "-p", "-t", &session]);
        if s.lines().any(|l| l.trim() == "PROMPT-OK") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shell does not answer: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
