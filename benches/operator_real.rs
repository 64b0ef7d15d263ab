//! The operator benchmark on the real control plane of `scripts/real-kube.sh` (issue 20
//! item 6): the release binary as its own process under the chart's ServiceAccount (the
//! chart installed with the real helm, all namespaces), the Microsoft emulator on loopback
//! (10 distinct credentials). Reports the operator's CPU and RSS (from /proc), the CPU of
//! kube-apiserver and etcd over the same window (their pid files), the operator's writes
//! per integration (the API server's audit log, by the ServiceAccount's user name), and
//! the time until every integration is Ready, on a first start and after a restart.
//!
//! `source "$(bash scripts/real-kube.sh env)"; cargo bench --bench operator_real` runs
//! 1,000 and 10,000 integrations without and with one target Deployment each;
//! `OPERATOR_BENCH_SIZES`, `OPERATOR_BENCH_TARGETS=none|one|both` and `OPERATOR_BENCH_QUIET`
//! narrow it as for `benches/operator.rs`. Under `cargo test` (no `--bench`) it runs a
//! 20-integration smoke round when a control plane is there, and says so when not. Each
//! round leaves its namespaces to the API server's namespace controller.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::operator_process::OperatorProcess as Operator;
use common::real_kube::{Audit, RealKube, namespace};
use common::release::Release;
use common::{Emulator, TENANT, json_response};
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

const CREDENTIALS: usize = 10;
const LIMIT: Duration = Duration::from_secs(1800);

fn secret_value(c: usize) -> String {
    format!("Q~xR8~kZ3vW9pLm_YhT2.nBq7XcJf5Gd0sAe4R{c}~K")
}

/// utime + stime of `pid`, in seconds.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// The control plane's own processes, from the pid files beside its audit log.
struct Servers {
    apiserver: u32,
    etcd: u32,
}

impl Servers {
    fn find(audit: &Audit) -> Self {
        let dir = audit.path.parent().unwrap();
        let pid = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            apiserver: pid("kube-apiserver.pid"),
            etcd: pid("etcd.pid"),
        }
    }

    fn cpu(&self) -> (f64, f64) {
        (cpu_of(self.apiserver), cpu_of(self.etcd))
    }
}

/// The API resource of an object of `kind`.
fn resource(kind: &str) -> kube::core::ApiResource {
    use kube::core::ApiResource;
    match kind {
        "Secret" => ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
        "Deployment" => ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        _ => ApiResource::erase::<nocobase_mail_operator::api::MicrosoftMailIntegration>(&()),
    }
}

/// Creates `docs` with at most 16 requests in flight.
async fn create_all(client: &Client, docs: Vec<Value>) {
    futures::stream::iter(docs)
        .for_each_concurrent(16, |d| {
            let client = client.clone();
            async move {
                let ar = resource(d["kind"].as_str().unwrap());
                let obj: DynamicObject = serde_json::from_value(d).unwrap();
                let ns = obj.metadata.namespace.clone().unwrap();
                let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
                api.create(&PostParams::default(), &obj).await.unwrap();
            }
        })
        .await;
}

/// The objects of one round: 10 credential Secrets per namespace, the integrations, and
/// with `targets` one Deployment each.
fn objects(namespaces: &[String], emu: &str, n: usize, targets: bool) -> Vec<Value> {
    let mut out = vec![];
    for ns in namespaces {
        for c in 0..CREDENTIALS {
            out.push(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("entra-{c}"), "namespace": ns},
                "stringData": {"client-secret": secret_value(c)}}));
        }
    }
    for i in 0..n {
        let ns = &namespaces[i % namespaces.len()];
        let mut t = vec![];
        if targets {
            let app = format!("nocobase-{i}");
            out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app}},
                        "spec": {"containers": [{"name": "nocobase", "image": "nocobase/nocobase:2.2.15",
                            "env": [{"name": "APP_KEY", "value": "k"}]}]}}}}));
            t.push(json!({"deploymentName": app}));
        }
        out.push(json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1",
            "kind": "MicrosoftMailIntegration",
            "metadata": {"name": format!("mmi-{i}"), "namespace": ns},
            "spec": {"tenantId": TENANT, "clientId": common::CLIENT,
                "clientSecretRef": {"name": format!("entra-{}", i % CREDENTIALS)},
                "authorityHost": emu, "graphHost": emu,
                "secretExpiry": {"discoverFromGraph": false, "expiresAt": "2028-01-01T00:00:00Z"},
                "targets": t}}));
    }
    out
}

async fn ready_gauge(op: &Operator) -> usize {
    op.get("/metrics").await.map_or(0, |m| {
        m.lines()
            .filter(|l| l.starts_with("nocobase_mail_ready{") && l.ends_with(" 1"))
            .count()
    })
}

#[derive(Default)]
struct Figures {
    wall: f64,
    cpu: f64,
    apiserver: f64,
    etcd: f64,
    writes: usize,
    quiet_writes: usize,
    quiet_kib: u64,
    peak_kib: u64,
}

struct Round {
    kube: RealKube,
    release: Release,
    audit: Audit,
    servers: Servers,
    dir: tempfile::TempDir,
    user: String,
}

impl Round {
    async fn start(&self) -> Operator {
        let client = self.kube.client().await;
        let (args, env, kubeconfig) = self.release.launch(&client, self.dir.path()).await;
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let log = self.dir.path().join("operator.log");
        Operator::start(&kubeconfig, &args, &env, &log)
    }

    /// Runs the operator until `n` integrations are Ready, then `quiet` more.
    async fn measure(&self, n: usize, quiet: Duration) -> (Operator, Figures) {
        let mark = self.audit.mark();
        let (api0, etcd0) = self.servers.cpu();
        let started = Instant::now();
        let op = self.start().await;
        while ready_gauge(&op).await < n {
            assert!(started.elapsed() < LIMIT, "not all Ready after {LIMIT:?}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (api1, etcd1) = self.servers.cpu();
        let writes = |since| {
            let by = self.audit.by(&self.user, since);
            by.iter()
                .filter(|e| e.is_write() && e.resource != "leases" && e.resource != "events")
                .count()
        };
        let mut f = Figures {
            wall: started.elapsed().as_secs_f64(),
            cpu: op.cpu_seconds(),
            apiserver: api1 - api0,
            etcd: etcd1 - etcd0,
            writes: writes(mark),
            ..Default::default()
        };
        let quiet_mark = self.audit.mark();
        tokio::time::sleep(quiet).await;
        f.quiet_writes = writes(quiet_mark);
        f.quiet_kib = op.status_kib("VmRSS:");
        f.peak_kib = op.status_kib("VmHWM:");
        (op, f)
    }
}

fn print(n: usize, targets: bool, label: &str, f: &Figures) {
    println!(
        "  {label:<11} all {n} Ready after {:.1} s; operator CPU {:.2} s ({:.2} ms each), RSS peak {:.0} MiB, quiet {:.0} MiB ({:.1} KiB each)",
        f.wall,
        f.cpu,
        f.cpu * 1000.0 / n as f64,
        f.peak_kib as f64 / 1024.0,
        f.quiet_kib as f64 / 1024.0,
        f.quiet_kib as f64 / n as f64
    );
    println!(
        "  {:<11} kube-apiserver CPU {:.1} s, etcd CPU {:.1} s; operator writes {} ({:.2} per integration{}), {} while quiet",
        "",
        f.apiserver,
        f.etcd,
        f.writes,
        f.writes as f64 / n as f64,
        if targets { ", targets included" } else { "" },
        f.quiet_writes
    );
}

async fn scenario(kube: &RealKube, n: usize, targets: bool, quiet: Duration) {
    let client = kube.client().await;
    common::real_kube::install_crd(&client).await;
    let audit = kube.audit().expect("the bench reads the audit log");
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    let ops = namespace(&client, "bench-ops").await;
    let hosts = common::host_port(&emu.uri());
    let (a, g) = (
        format!("allowedHosts.authority={{{hosts}}}"),
        format!("allowedHosts.graph={{{hosts}}}"),
    );
    let minor = kube.minor(&client).await;
    let name = format!("b{}", std::process::id() % 100_000);
    let release = Release::install(kube, &name, &ops, minor, &["--set", &a, "--set", &g]);
    let mut namespaces = vec![];
    for _ in 0..n.div_ceil(100) {
        namespaces.push(namespace(&client, "bench").await);
    }
    let seeding = Instant::now();
    create_all(&client, objects(&namespaces, &emu.uri(), n, targets)).await;
    let what = if targets {
        "one target Deployment each"
    } else {
        "no targets"
    };
    println!(
        "{n} integrations, {what}, on the real control plane ({} namespaces, {CREDENTIALS} credentials; seeded in {:.0} s)",
        namespaces.len(),
        seeding.elapsed().as_secs_f64()
    );
    let round = Round {
        user: release.user(),
        servers: Servers::find(&audit),
        kube: kube.clone(),
        release,
        audit,
        dir: tempfile::tempdir().unwrap(),
    };
    let (mut op, first) = round.measure(n, quiet).await;
    op.stop();
    print(n, targets, "first start", &first);
    let (mut op, again) = round.measure(n, quiet).await;
    print(n, targets, "restart", &again);
    // the operator still runs, so that the finalizers go with the namespaces
    for ns in &namespaces {
        common::real_kube::delete_namespace(&client, ns).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.stop();
    let _ = round.release.uninstall();
    assert_eq!(again.writes, 0, "a restart writes nothing");
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let Some(kube) = RealKube::from_env_or_skip() else {
        println!("operator_real benchmark: no control plane (source scripts/real-kube.sh env)");
        return;
    };
    let env_or = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let sizes: Vec<usize> = if full {
        env_or("OPERATOR_BENCH_SIZES", "1000,10000")
            .split(',')
            .map(|s| s.trim().parse().expect("OPERATOR_BENCH_SIZES"))
            .collect()
    } else {
        vec![20]
    };
    let default_targets = if full { "both" } else { "one" };
    let targets: Vec<bool> = match env_or("OPERATOR_BENCH_TARGETS", default_targets).as_str() {
        "none" => vec![false],
        "one" => vec![true],
        _ => vec![false, true],
    };
    let quiet = Duration::from_secs(
        env_or("OPERATOR_BENCH_QUIET", if full { "20" } else { "2" })
            .parse()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for &n in &sizes {
        for &t in &targets {
            rt.block_on(scenario(&kube, n, t, quiet));
        }
    }
}
