//! The operator binary as its own process, as a user runs it (`nocobase-mail-operator run`
//! with a kubeconfig): its log captured to a file, /readyz waited for, stopped with
//! SIGTERM by process id.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::fake_api::FakeApi;

/// Ticks per second of utime/stime in /proc/PID/stat (USER_HZ, 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// The binary under test: the one cargo built for this test run, or `OPERATOR_BIN` (a
/// release build, or another version to compare with).
pub fn bin() -> String {
    std::env::var("OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_nocobase-mail-operator").to_owned())
}

/// A free loopback port (bound and released: good enough for a test's own server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Serves the fake over plain HTTP, the way an API server answers kube clients; returns
/// the server's base URL for a kubeconfig.
pub async fn serve_fake(api: FakeApi) -> String {
    use axum::body::Body;
    use tower::Service;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move |req: http::Request<Body>| {
        let mut api = api.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let req = http::Request::from_parts(parts, kube::client::Body::from(bytes));
            let resp = api.call(req).await.unwrap();
            resp.map(Body::new)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}")
}

/// Who the kubeconfig signs in as, and whom the server's certificate is checked against.
#[derive(Default, Clone)]
pub struct Credentials {
    /// A bearer token (a ServiceAccount's, or the admin token of a test server).
    pub token: Option<String>,
    /// The CA that signed the server's certificate (https servers).
    pub ca_file: Option<PathBuf>,
}

/// Writes a kubeconfig for `server` into `dir` and returns its path.
pub fn kubeconfig(dir: &Path, server: &str, creds: &Credentials) -> PathBuf {
    let path = dir.join("kubeconfig");
    let ca = creds
        .ca_file
        .as_ref()
        .map(|f| format!(", certificate-authority: '{}'", f.display()))
        .unwrap_or_default();
    let user = creds
        .token
        .as_ref()
        .map(|t| format!("{{token: '{t}'}}"))
        .unwrap_or_else(|| "{}".into());
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters: [{{name: test, cluster: {{server: '{server}'{ca}}}}}]\n\
         users: [{{name: test, user: {user}}}]\n\
         contexts: [{{name: test, context: {{cluster: test, user: test, namespace: default}}}}]\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The `--allowed-authority-hosts` and `--allowed-graph-hosts` flags for an emulator at
/// `uri` (entries are host:port, without the scheme).
pub fn allow_microsoft(uri: &str) -> Vec<String> {
    let host_port = super::host_port(uri);
    ["--allowed-authority-hosts", "--allowed-graph-hosts"]
        .iter()
        .map(|flag| format!("{flag}={host_port}"))
        .collect()
}

/// `run` as the chart runs it, without leader election, logging JSON lines: the start of
/// the arguments of a test's operator.
pub fn run_args() -> Vec<String> {
    ["run", "--no-leader-election", "--log-format", "json"]
        .map(str::to_owned)
        .to_vec()
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
        Self::start_command(Command::new(bin()), kubeconfig, args, env, log)
    }

    /// [`Self::start`] for the image's entrypoint in its unpacked root file system `root`,
    /// as user 65532 (`unshare` for its own mount, UTS and IPC namespaces, `chroot`; the
    /// network is the host's, so loopback servers are reached). `kubeconfig` is a path
    /// inside `root`.
    pub fn start_in_root(
        root: &Path,
        kubeconfig: &str,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let mut c = Command::new("unshare");
        c.args([
            "--ipc",
            "--uts",
            "--mount",
            "chroot",
            "--userspec=65532:65532",
        ])
        .arg(root)
        .arg("/nocobase-mail-operator")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        Self::start_command(c, Path::new(kubeconfig), args, env, log)
    }

    fn start_command(
        mut command: Command,
        kubeconfig: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the operator's log file");
        let child = command
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

    /// GET on the operator's own server; `None` unless it answers 2xx.
    pub async fn get(&self, path: &str) -> Option<String> {
        let r = reqwest::get(format!("http://{}{path}", self.listen))
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.text().await.ok()
    }

    /// utime + stime of the process so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // fields after the command name (which may hold spaces): utime is the 12th, stime the 13th
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / CLK_TCK
    }

    /// A field of /proc/PID/status in KiB (`VmRSS:`, `VmHWM:`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
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
