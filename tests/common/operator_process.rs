//! The operator binary as its own process, as a user runs it (`nocobase-mail-operator run`
//! with a kubeconfig): its log captured to a file, /readyz waited for, stopped with
//! SIGTERM by process id.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_nocobase-mail-operator");

/// A free loopback port (bound and released: good enough for a test's own server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub struct OperatorProcess {
    child: Option<Child>,
    pub log: PathBuf,
    /// host:port of /healthz, /readyz and /metrics.
    pub listen: String,
}

impl OperatorProcess {
    /// Starts `nocobase-mail-operator` with `args` (after which `--listen` on a free
    /// loopback port is added), `KUBECONFIG=kubeconfig` and `env`; stdout and stderr go
    /// to `log`.
    pub fn start(kubeconfig: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the operator's log file");
        let child = Command::new(BIN)
            .args(args)
            .arg(format!("--listen={listen}"))
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the operator binary starts");
        Self {
            child: Some(child),
            log: log.to_owned(),
            listen,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until /readyz answers 200 (caches synced); panics with the log when the
    /// process exits or `secs` pass.
    pub async fn wait_ready(&mut self, secs: u64) {
        let url = format!("http://{}/readyz", self.listen);
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let answer = http.get(&url).timeout(Duration::from_secs(2)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the operator exited ({status}) before it was ready:\n{}",
                    self.logs()
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!("the operator was not ready in {secs} s:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then up to 10 s for a clean exit (SIGKILL after that).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..100 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
