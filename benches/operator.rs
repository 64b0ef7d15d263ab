//! Benchmark of what a user sees: the release operator binary as its own process, against
//! the fake Kubernetes API (`tests/common/fake_api.rs`) served over HTTP from this process
//! and the Microsoft emulator (10 distinct credentials, Graph readable). CPU and memory are
//! read from `/proc/<operator pid>`, so nothing of the fake or the emulator is counted.
//!
//! `cargo bench --bench operator` runs 1,000 and 10,000 integrations, without and with one
//! target Deployment each. `OPERATOR_BENCH_SIZES=1000,10000` and
//! `OPERATOR_BENCH_TARGETS=none|one|both` narrow it; `OPERATOR_BENCH_QUIET=20` sets the
//! quiet window in seconds; `OPERATOR_BENCH_ARGS` adds flags to `run`;
//! `OPERATOR_BIN` runs another build of the operator (to compare two versions). Under `cargo test`
//! (no `--bench`) it runs a 20-integration smoke round with the test-profile binary.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::harness::MMI_AV;
use common::operator_process::{self as process, Credentials, OperatorProcess as Operator};
use common::{Emulator, TENANT, json_response};
use serde_json::{Value, json};

const NAMESPACES: usize = 100;
const CREDENTIALS: usize = 10;

/// Distinct client secret Values, shaped like the portal's (hint `Q~x`, as in the Graph
/// fixture, so the expiry is found).
fn secret_value(c: usize) -> String {
    format!("Q~xR8~kZ3vW9pLm_YhT2.nBq7XcJf5Gd0sAe4R{c}~K")
}

/// What one run of the operator process cost.
#[derive(Default)]
struct Figures {
    cpu_until_ready: f64,
    wall_until_ready: f64,
    /// Restart only: from process start to /readyz answering (caches synced).
    wall_until_synced: f64,
    peak_kib: u64,
    quiet_kib: u64,
    microsoft_calls: usize,
    writes_quiet: usize,
    writes_total: usize,
    cpu_quiet: f64,
}

/// Ready integrations according to the operator's own gauge.
async fn ready_gauge(op: &Operator) -> usize {
    op.get("/metrics").await.map_or(0, |m| {
        m.lines()
            .filter(|l| l.starts_with("nocobase_mail_ready{") && l.ends_with(" 1"))
            .count()
    })
}

/// Starts the operator binary (`OPERATOR_BIN` runs another build); its log goes to `log`
/// (JSON lines at info, as the chart runs it).
fn start_operator(kubeconfig: &Path, log: &Path, emu: &str) -> Operator {
    let mut args = process::run_args();
    args.extend(process::allow_microsoft(emu));
    if let Ok(extra) = std::env::var("OPERATOR_BENCH_ARGS") {
        args.extend(extra.split_whitespace().map(str::to_owned));
    }
    Operator::start(kubeconfig, &args, &[("RUST_LOG", "info")], log)
}

/// The API objects: 10 credential Secrets per namespace, the integrations, and with
/// `targets` one NocoBase Deployment per integration.
fn seed(api: &FakeApi, emu: &str, n: usize, targets: bool) {
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let namespaces = NAMESPACES.min(n);
    for ns in 0..namespaces {
        for c in 0..CREDENTIALS {
            api.insert(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("entra-{c}"), "namespace": format!("ns-{ns}")},
                "data": {"client-secret": b64(secret_value(c))}}));
        }
    }
    for i in 0..n {
        let ns = format!("ns-{}", i % namespaces);
        let mut t = vec![];
        if targets {
            let app = format!("nocobase-{i}");
            api.insert(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": ns, "labels": {"app": app}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app}},
                        "spec": {"containers": [{"name": "nocobase", "image": "nocobase/nocobase:2.2.15",
                            "env": [{"name": "APP_KEY", "value": "k"}]}]}}}}));
            t.push(json!({"deploymentName": app}));
        }
        api.insert(
            json!({"apiVersion": MMI_AV, "kind": "MicrosoftMailIntegration",
            "metadata": {"name": format!("mmi-{i}"), "namespace": ns},
            "spec": {"tenantId": TENANT, "clientId": common::CLIENT,
                     "clientSecretRef": {"name": format!("entra-{}", i % CREDENTIALS)},
                     "authorityHost": emu, "graphHost": emu, "targets": t}}),
        );
    }
}

fn ready_in_fake(api: &FakeApi) -> usize {
    let ready = |m: &Value| {
        m["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    api.list(MMI_AV, "MicrosoftMailIntegration", "")
        .iter()
        .filter(|m| ready(m))
        .count()
}

async fn microsoft_calls(emu: &Emulator) -> usize {
    emu.token_requests().await.len() + emu.graph_requests().await.len()
}

/// Waits out the quiet window and fills in the figures that belong to it.
async fn quiet(op: &Operator, api: &FakeApi, quiet: Duration, f: &mut Figures) {
    api.clear_requests();
    let cpu0 = op.cpu_seconds();
    tokio::time::sleep(quiet).await;
    f.writes_quiet = api.writes();
    f.cpu_quiet = op.cpu_seconds() - cpu0;
    f.quiet_kib = op.status_kib("VmRSS:");
    f.peak_kib = op.status_kib("VmHWM:");
}

const LIMIT: Duration = Duration::from_secs(900);

/// First start on a fresh cluster: until every integration's Ready condition is True in
/// the API (read from the fake, so that polling costs the operator nothing).
async fn first_start(env: &Env, n: usize, wait: Duration) -> (Operator, Figures) {
    let started = Instant::now();
    let op = start_operator(&env.kubeconfig, &env.log, &env.emu.uri());
    let mut f = Figures::default();
    loop {
        if ready_in_fake(&env.api) == n {
            break;
        }
        assert!(started.elapsed() < LIMIT, "not all Ready after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    f.cpu_until_ready = op.cpu_seconds();
    f.wall_until_ready = started.elapsed().as_secs_f64();
    let writes = env.api.writes();
    quiet(&op, &env.api, wait, &mut f).await;
    f.writes_total = writes;
    f.microsoft_calls = microsoft_calls(&env.emu).await;
    (op, f)
}

/// A restart with everything already Ready: until /readyz, then until the operator's gauge
/// counts every integration Ready (its status in the API was already Ready before).
async fn restart(env: &Env, n: usize, wait: Duration) -> (Operator, Figures) {
    let calls_before = microsoft_calls(&env.emu).await;
    env.api.clear_requests();
    let started = Instant::now();
    let op = start_operator(&env.kubeconfig, &env.log, &env.emu.uri());
    let mut f = Figures::default();
    while op.get("/readyz").await.is_none() {
        assert!(started.elapsed() < LIMIT, "not ready after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.wall_until_synced = started.elapsed().as_secs_f64();
    while ready_gauge(&op).await < n {
        assert!(started.elapsed() < LIMIT, "not all Ready after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    f.cpu_until_ready = op.cpu_seconds();
    f.wall_until_ready = started.elapsed().as_secs_f64();
    let writes = env.api.writes();
    quiet(&op, &env.api, wait, &mut f).await;
    f.writes_total = writes + f.writes_quiet;
    f.microsoft_calls = microsoft_calls(&env.emu).await - calls_before;
    (op, f)
}

struct Env {
    api: FakeApi,
    emu: Emulator,
    kubeconfig: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

async fn environment(n: usize, targets: bool) -> Env {
    let api = common::harness::fake_cluster();
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(json_response(200, "graph_application.json"))
        .await;
    seed(&api, &emu.uri(), n, targets);
    api.clear_requests();
    let server = process::serve_fake(api.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = process::kubeconfig(dir.path(), &server, &Credentials::default());
    let log = std::env::temp_dir().join(format!(
        "operator-bench-{n}-{}.log",
        if targets { "targets" } else { "plain" }
    ));
    let _ = std::fs::remove_file(&log);
    Env {
        api,
        emu,
        kubeconfig,
        log,
        _dir: dir,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn print(n: usize, targets: bool, first: &Figures, again: &Figures, scrape_cpu: f64) {
    let what = if targets {
        "with one target Deployment each"
    } else {
        "no targets"
    };
    println!("{n} integrations, {what} ({NAMESPACES} namespaces, {CREDENTIALS} credentials)");
    println!(
        "  first start: CPU until all Ready {:.2} s ({:.3} ms per integration), wall {:.2} s",
        first.cpu_until_ready,
        first.cpu_until_ready * 1000.0 / n as f64,
        first.wall_until_ready
    );
    println!(
        "               RSS peak {}, quiet {} ({:.1} KiB per integration); Microsoft calls {}; writes {} until Ready, {} while quiet (CPU {:.2} s)",
        mib(first.peak_kib),
        mib(first.quiet_kib),
        first.quiet_kib as f64 / n as f64,
        first.microsoft_calls,
        first.writes_total,
        first.writes_quiet,
        first.cpu_quiet
    );
    println!(
        "  restart:     caches synced after {:.2} s, all Ready after {:.2} s (CPU {:.2} s)",
        again.wall_until_synced, again.wall_until_ready, again.cpu_until_ready
    );
    println!(
        "               RSS peak {}, quiet {}; Microsoft calls {}; writes {} (CPU while quiet {:.2} s)",
        mib(again.peak_kib),
        mib(again.quiet_kib),
        again.microsoft_calls,
        again.writes_total,
        again.cpu_quiet
    );
    println!("  one /metrics scrape costs the operator {scrape_cpu:.3} s CPU");
}

/// CPU one scrape of /metrics costs (the restart polls the gauge every 500 ms).
async fn scrape_cost(op: &Operator) -> f64 {
    let cpu0 = op.cpu_seconds();
    for _ in 0..10 {
        ready_gauge(op).await;
    }
    (op.cpu_seconds() - cpu0) / 10.0
}

async fn scenario(n: usize, targets: bool, wait: Duration) {
    let env = environment(n, targets).await;
    let (mut op, first) = first_start(&env, n, wait).await;
    op.stop();
    let (mut op, again) = restart(&env, n, wait).await;
    let scrape = scrape_cost(&op).await;
    op.stop();
    print(n, targets, &first, &again, scrape);
    assert_eq!(again.writes_total, 0, "a restart writes nothing");
    assert_eq!(again.microsoft_calls, 0, "a restart asks Microsoft nothing");
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env_or = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let sizes: Vec<usize> = if full {
        env_or("OPERATOR_BENCH_SIZES", "1000,10000")
            .split(',')
            .map(|s| s.trim().parse().expect("OPERATOR_BENCH_SIZES"))
            .collect()
    } else {
        vec![20]
    };
    // the smoke round takes the path with targets, which covers the other one
    let default_targets = if full { "both" } else { "one" };
    let targets: Vec<bool> = match env_or("OPERATOR_BENCH_TARGETS", default_targets).as_str() {
        "none" => vec![false],
        "one" => vec![true],
        _ => vec![false, true],
    };
    let default_quiet = if full { "20" } else { "2" };
    let wait = Duration::from_secs(
        env_or("OPERATOR_BENCH_QUIET", default_quiet)
            .parse()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for &n in &sizes {
        for &t in &targets {
            rt.block_on(scenario(n, t, wait));
        }
    }
    if !full {
        println!("operator benchmark: smoke round with 20 integrations finished");
    }
}
