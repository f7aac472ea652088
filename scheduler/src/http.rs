//! HTTP on the dashboard address: `/metrics` (Prometheus text), `/api/cluster`
//! (JSON) and a minimal status page at `/`.

use std::sync::Arc;

use actix::Addr;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::server::{ClusterJson, SchedulerActor};

#[derive(Clone)]
struct AppState {
    actor: Addr<SchedulerActor>,
    metrics: Arc<Metrics>,
}

/// The router of the scheduler's HTTP endpoints.
pub fn router(actor: Addr<SchedulerActor>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_text))
        .route("/api/cluster", get(cluster))
        .with_state(AppState { actor, metrics })
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn cluster(State(app): State<AppState>) -> Response {
    match app.actor.send(ClusterJson).await {
        Ok(json) => axum::Json(json).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Stratus</title></head>\
         <body><h1>Stratus scheduler</h1><ul>\
         <li><a href=\"/api/cluster\">/api/cluster</a> (JSON)</li>\
         <li><a href=\"/metrics\">/metrics</a> (Prometheus)</li></ul></body></html>",
    )
}
