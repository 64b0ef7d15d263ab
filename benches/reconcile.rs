//! Benchmark: the controller reconciling 1,000 and 10,000 integrations against the
//! in-process fake API and the Microsoft emulator (no Microsoft latency), 10 distinct
//! credentials shared among them. Reports time until all are Ready, reconciles per second,
//! Microsoft calls, API writes per no-op reconcile, and memory.
//!
//! `cargo bench --bench reconcile` runs the full sizes; under `cargo test` (no `--bench`
//! argument) it runs a 50-integration smoke round so the code stays working.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::{CLIENT, Emulator, TENANT, allow_exactly, json_response};
use kube::ResourceExt;
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::controller::{CacheSync, context, reconcile, run_controller};
use nocobase_mail_operator::telemetry::Metrics;
use serde_json::json;

/// Counts live heap bytes, so the operator's own memory can be told from the fake API's.
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(
            new as isize - l.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_kib() -> f64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
}

const NAMESPACES: usize = 100;
const CREDENTIALS: usize = 10;

fn secret_value(i: usize) -> String {
    format!("Bq{i}x7Zk2Lp9Vt4Rk8Wm1Nc6Hb3Jd5Fy0Ts2Qe7Ua")
}

/// Resident memory now and at its peak, in KiB, from /proc (Linux).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn run(n: usize) {
    let api = FakeApi::new();
    api.register_kind(
        "nocobase-mail-operator.dev/v1alpha1",
        "MicrosoftMailIntegration",
        "microsoftmailintegrations",
        true,
    );
    api.add_status_subresource("microsoftmailintegrations");
    let emu = Emulator::start().await;
    for c in 0..CREDENTIALS {
        emu.token_for_secret(&secret_value(c), json_response(200, "token_success.json"))
            .await;
    }
    use base64::Engine;
    for ns in 0..NAMESPACES.min(n) {
        for c in 0..CREDENTIALS {
            api.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("entra-{c}"), "namespace": format!("ns-{ns}")},
                "data": {"client-secret": base64::engine::general_purpose::STANDARD.encode(secret_value(c))}}));
        }
    }
    for i in 0..n {
        let ns = format!("ns-{}", i % NAMESPACES.min(n));
        api.insert(json!({"apiVersion": "nocobase-mail-operator.dev/v1alpha1", "kind": "MicrosoftMailIntegration",
            "metadata": {"name": format!("mmi-{i}"), "namespace": ns},
            "spec": {"tenantId": TENANT, "clientId": CLIENT, "clientSecretRef": {"name": format!("entra-{}", i % CREDENTIALS)},
                     "authorityHost": emu.uri(), "graphHost": emu.uri(), "secretExpiry": {"discoverFromGraph": false}}}));
    }
    api.clear_requests();
    let (rss_before, _) = memory_kib();

    let metrics = Arc::new(Metrics::default());
    let ctx = context(
        api.client(),
        Arc::clone(&metrics),
        None,
        "bench".into(),
        allow_exactly(&emu.uri(), &[]),
    )
    .unwrap();
    let started = Instant::now();
    let controller = tokio::spawn(run_controller(
        api.client(),
        None,
        Arc::clone(&ctx),
        CacheSync::new(1, Arc::new(AtomicBool::new(false))),
    ));
    // Ready integrations, from the operator's own gauge: listing 10,000 objects from the
    // fake every 100 ms would hold its lock and distort the figures.
    let ready = |_: &FakeApi| {
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("nocobase_mail_ready{") && l.ends_with(" 1"))
            .count()
    };
    loop {
        if ready(&api) == n {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            panic!("only {} of {n} Ready after 600 s", ready(&api));
        }
        api.clear_requests();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ready = started.elapsed();
    // let the watch-triggered follow-up rounds drain
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reconciles = metrics.reconciles.get();
    let (rss_after, peak) = memory_kib();
    let live_running = live_kib();
    controller.abort();
    let _ = controller.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live_stopped = live_kib();
    let microsoft_calls = emu.token_requests().await.len();

    // No-op reconciles: every integration once more, directly.
    api.clear_requests();
    let t0 = Instant::now();
    for m in api.list(
        "nocobase-mail-operator.dev/v1alpha1",
        "MicrosoftMailIntegration",
        "",
    ) {
        let obj: MicrosoftMailIntegration = serde_json::from_value(m).unwrap();
        let name = obj.name_any();
        reconcile(Arc::new(obj), Arc::clone(&ctx))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let noop = t0.elapsed();
    let noop_writes = api.writes();
    drop(ctx);
    let live_no_ctx = live_kib();

    println!("integrations: {n} ({NAMESPACES} namespaces, {CREDENTIALS} distinct credentials)");
    println!(
        "  time until all Ready:        {:.2} s",
        all_ready.as_secs_f64()
    );
    println!(
        "  reconciles run:              {reconciles} ({:.0}/s)",
        reconciles as f64 / all_ready.as_secs_f64()
    );
    println!("  Microsoft token requests:    {microsoft_calls}");
    println!(
        "  no-op reconciles:            {n} in {:.2} s ({:.0}/s), API writes: {noop_writes} ({:.3} per reconcile)",
        noop.as_secs_f64(),
        n as f64 / noop.as_secs_f64(),
        noop_writes as f64 / n as f64
    );
    // What the running controller holds (watch caches, queues, validation cache, metrics):
    // live heap while running minus live heap once it and its context are dropped; the
    // fake API server's objects are in both and cancel out.
    let operator = live_running - live_no_ctx.min(live_stopped);
    println!(
        "  operator heap: {operator:.0} KiB while running ({:.2} KiB per integration)",
        operator / n as f64
    );
    println!(
        "  process RSS (fake API server and emulator included): {rss_before} KiB before the controller, {rss_after} KiB after, peak {peak} KiB"
    );
    assert_eq!(
        microsoft_calls, CREDENTIALS,
        "one Microsoft call per distinct credential"
    );
    assert_eq!(noop_writes, 0, "a no-op reconcile writes nothing");
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if full {
        rt.block_on(run(1_000));
        rt.block_on(run(10_000));
    } else {
        rt.block_on(run(50));
        println!("reconcile benchmark: smoke round with 50 integrations finished");
    }
}
