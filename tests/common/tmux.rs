//! The console in a detached tmux session: start it, type, read the screen, wait for text.
//! (tmux must be installed; the tests that use it are the console's end-to-end checks.)
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    pub session: String,
}

pub fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Tmux {
    /// A detached 120×40 session running a shell with `HOPBACK_*` set for the test.
    pub fn start(name: &str, env: &[(&str, String)]) -> Self {
        let session = format!(
            "hb-{name}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut cmd = Command::new("tmux");
        cmd.args(["new-session", "-d", "-s", &session, "-x", "120", "-y", "40"]);
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        cmd.args(["sh"]);
        let st = cmd.status().expect("tmux");
        assert!(st.success());
        let t = Self { session };
        t.keys(&["export PS1='READY$ '", "Enter"]);
        t
    }
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        tmux(&args);
    }
    pub fn literal(&self, text: &str) {
        tmux(&["send-keys", "-t", &self.session, "-l", text]);
    }
    pub fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-t", &self.session])
    }
    pub fn alternate_on(&self) -> bool {
        tmux(&["display", "-p", "-t", &self.session, "#{alternate_on}"]).trim() == "1"
    }
    pub fn pane_pid(&self) -> u32 {
        tmux(&["display", "-p", "-t", &self.session, "#{pane_pid}"])
            .trim()
            .parse()
            .unwrap()
    }
    pub fn resize(&self, x: u32, y: u32) {
        tmux(&[
            "resize-window",
            "-t",
            &self.session,
            "-x",
            &x.to_string(),
            "-y",
            &y.to_string(),
        ]);
    }
    /// Wait until the screen satisfies `f`.
    pub fn wait(&self, secs: u64, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "waited {secs} s for {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.session]);
    }
}
