//! HTTP on the dashboard address: the live dashboard page (`/`, `/static/*`,
//! embedded in the binary), its data (`/api/dashboard`, and `/api/events` as
//! server-sent events), `/metrics` (Prometheus text), `/api/cluster`,
//! Prometheus HTTP service discovery of the workers (`/api/sd`) and the run
//! API (`/api/runs`, `/api/runs/{id}`, `/api/runs/{id}/artifacts/{name}`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;

use crate::server::{ClusterJson, DashboardJson, SchedulerActor, Shared};

#[derive(Clone)]
struct AppState {
    actor: Addr<SchedulerActor>,
    shared: Arc<Shared>,
}

/// The router of the scheduler's HTTP endpoints.
pub fn router(actor: Addr<SchedulerActor>, shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/static/app.js", get(app_js))
        .route("/static/app.css", get(app_css))
        .route("/metrics", get(metrics_text))
        .route("/api/cluster", get(cluster))
        .route("/api/sd", get(service_discovery))
        .route("/api/dashboard", get(dashboard))
        .route("/api/events", get(events))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/artifacts/{name}", get(artifact))
        .with_state(AppState { actor, shared })
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
}

fn not_found(what: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "error": what })),
    )
        .into_response()
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.shared.metrics.render(),
    )
        .into_response()
}

async fn cluster(State(app): State<AppState>) -> Response {
    match app.actor.send(ClusterJson).await {
        Ok(json) => axum::Json(json).into_response(),
        Err(e) => unavailable(e),
    }
}

/// Prometheus `http_sd_configs` targets: every worker's metrics endpoint.
async fn service_discovery(State(app): State<AppState>) -> Response {
    let cluster = match app.actor.send(ClusterJson).await {
        Ok(json) => json,
        Err(e) => return unavailable(e),
    };
    let targets: Vec<serde_json::Value> = cluster["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| {
            let url = w["metrics_url"].as_str()?;
            let address = url
                .trim_start_matches("http://")
                .trim_end_matches("/metrics");
            Some(serde_json::json!({
                "targets": [address],
                "labels": { "worker": w["name"], "host": w["host"] },
            }))
        })
        .collect();
    axum::Json(targets).into_response()
}

async fn dashboard(State(app): State<AppState>) -> Response {
    match app.actor.send(DashboardJson).await {
        Ok(json) => axum::Json(json).into_response(),
        Err(e) => unavailable(e),
    }
}

/// Server-sent events: a `snapshot` at once, then after every change (at
/// most every 500 ms); keep-alive comments every 15 s.
async fn events(State(app): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = app.shared.changes.subscribe();
    let stream = futures_util::stream::unfold(
        (app.actor, changes, true),
        |(actor, mut changes, first)| async move {
            if !first {
                changes.changed().await.ok()?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                changes.borrow_and_update();
            }
            let snapshot = actor.send(DashboardJson).await.ok()?;
            let event = Event::default()
                .event("snapshot")
                .data(snapshot.to_string());
            Some((Ok(event), (actor, changes, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn runs(State(app): State<AppState>) -> Response {
    axum::Json(app.shared.runs.list_json()).into_response()
}

async fn run(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.shared.runs.detail_json(&id) {
        Some(json) => axum::Json(json).into_response(),
        None => not_found(format!("no run '{id}'")),
    }
}

async fn artifact(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let shared = app.shared.clone();
    let (run, file) = (id.clone(), name.clone());
    let found = tokio::task::spawn_blocking(move || shared.runs.artifact(&run, &file))
        .await
        .ok()
        .flatten();
    match found {
        Some((content_type, bytes)) => {
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        None => not_found(format!("run '{id}' has no artifact '{name}'")),
    }
}

async fn index() -> Html<&'static str> {
    Html(include_str!("dashboard/index.html"))
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("dashboard/app.js"),
    )
        .into_response()
}

async fn app_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("dashboard/app.css"),
    )
        .into_response()
}
