//! /metrics (Prometheus text), /healthz (the process answers) and /readyz (caches synced).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;

use crate::telemetry::Metrics;

type Served = (JoinHandle<()>, std::net::SocketAddr);

/// Binds `listen` and serves /metrics, /healthz and /readyz in the background; returns the
/// task and the bound address.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> Result<Served, String> {
    serve_router(listen, router(metrics, ready)).await
}

/// Serves /healthz and /readyz only (with `--metrics-listen`, /metrics is elsewhere).
pub async fn serve_health(listen: &str, ready: Arc<AtomicBool>) -> Result<Served, String> {
    serve_router(listen, health_router(ready)).await
}

/// Serves /metrics only, e.g. on a loopback address that only a sidecar proxy reaches:
/// /metrics names every integration's namespace and name.
pub async fn serve_metrics(listen: &str, metrics: Arc<Metrics>) -> Result<Served, String> {
    serve_router(listen, metrics_router(metrics)).await
}

async fn serve_router(listen: &str, app: Router) -> Result<Served, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((task, addr))
}

pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    metrics_router(metrics).merge(health_router(ready))
}

fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let m = Arc::clone(&metrics);
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    )
}

fn health_router(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let r = ready.load(Ordering::SeqCst);
                async move {
                    if r {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
                    }
                }
            }),
        )
}
