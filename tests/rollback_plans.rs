//! Rollback plan files and the CLI's guards: the sample plans validate, `--dry-run` shows each
//! step with the live counts it would act on (and changes nothing), a broken plan is refused with
//! the step and key named (exit 2), and without `--yes` or a terminal nothing happens (exit 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestNs;
use hopback::broker::topology::QueueType;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;

#[test]
fn sample_plans_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/plans");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let plan = hopback::ops::plan::load_plan(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!plan.steps.is_empty());
            n += 1;
        }
    }
    assert!(n >= 3, "expected the sample plans, found {n}");
}

#[test]
fn a_broken_plan_names_the_step_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "from = \"v2\"\nto = \"v1\"\n[[step]]\nkind = \"note\"\ntext = \"hi\"\n[[step]]\nkind = \"drain\"\nfrom = \"v2\"\ninto = \"v1\"\n",
    )
    .unwrap();
    let out = common::bin()
        .args(["--url", &common::test_url(), "rollback", "any-ns", "--plan"])
        .arg(&p)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("step 2 (drain)") && err.contains("into"),
        "{err}"
    );
}

#[tokio::test]
async fn dry_run_shows_live_counts_and_changes_nothing() {
    let t = TestNs::new("rb-dry", &["v1", "v2"], QueueType::Classic).await;
    // 7 messages waiting in v2 (bound directly through the default exchange).
    let ch = t.session.confirm_channel().await.unwrap();
    for i in 0..7 {
        ch.basic_publish(
            "".into(),
            format!("{}.v2", t.ns).as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_message_id(format!("m{i}").as_str().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let ns = t.ns.clone();
    let plan =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/plans/default-v2-to-v1.toml");
    let out = tokio::task::spawn_blocking(move || {
        common::bin()
            .args(["--url", &common::test_url(), "rollback", &ns, "--plan"])
            .arg(plan)
            .arg("--dry-run")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("would move 7 ready message(s)"), "{text}");
    assert!(
        text.contains("gate now v1=100 → v1=100") || text.contains("gate is v1=100 already"),
        "{text}"
    );
    assert!(text.contains("nothing will be changed"), "{text}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v2 = t
        .session
        .passive_queue(&format!("{}.v2", t.ns))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.ready, 7, "a dry run moved messages");
    t.cleanup().await;
}

#[tokio::test]
async fn refuses_without_yes_and_without_a_terminal() {
    let t = TestNs::new("rb-refuse", &["v1", "v2"], QueueType::Classic).await;
    let ns = t.ns.clone();
    let out = tokio::task::spawn_blocking(move || {
        common::bin()
            .args(["--url", &common::test_url(), "rollback", &ns])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = t.ns.clone();
    let out = tokio::task::spawn_blocking(move || {
        common::bin()
            .args([
                "--url",
                &common::test_url(),
                "--read-only",
                "rollback",
                &ns,
                "--yes",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.cleanup().await;
}
