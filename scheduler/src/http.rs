//! HTTP on the dashboard address: the live dashboard page (`/`, `/static/*`,
//! embedded in the binary), its data (`/api/dashboard`, and `/api/events` as
//! server-sent events), `/metrics` (Prometheus text), `/api/cluster`,
//! Prometheus HTTP service discovery of the workers (`/api/sd`) and the run
//! API (`/api/runs`, `/api/runs/{id}`, `/api/runs/{id}/artifacts/{name}`).
//!
//! Security (see README, "Dashboard and HTTP"):
//! - with a token ([`HttpConfig::token`]) every route answers 401 unless the
//!   request carries `Authorization: Bearer TOKEN`, or the cookie a browser
//!   got by opening `/?token=TOKEN` once (HttpOnly, SameSite=Strict; the
//!   page's own fetches and its event stream then send it by themselves);
//! - every response carries `X-Content-Type-Options: nosniff`, a strict
//!   `Content-Security-Policy` (only the page's own script, style and images,
//!   no inline code), `X-Frame-Options: DENY` and `Referrer-Policy`;
//! - artifacts are served as `image/png` only when their bytes are a PNG,
//!   anything else as an `application/octet-stream` attachment;
//! - [`serve`] bounds the time to send a request's headers (also the idle
//!   time of a keep-alive connection) and the number of connections, so a
//!   slow client (slowloris) is cut off and never holds others up.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;

use crate::runs::PNG_SIGNATURE;
use crate::server::{AdaptiveJson, ClusterJson, DashboardJson, SchedulerActor, Shared};

/// The Content-Security-Policy of every response: the page runs only its own
/// `/static/app.js` and `/static/app.css` (no inline script or style
/// attribute), shows images from this server (run plots) and `data:` (its
/// empty icon), talks only to this server, and may not be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// The cookie a browser keeps the token in after opening `/?token=TOKEN`.
pub const TOKEN_COOKIE: &str = "stratus_dashboard_token";

/// How the HTTP server guards itself.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Bearer token every route requires (None: open).
    pub token: Option<String>,
    /// Time a client has to send a request's headers; an idle keep-alive
    /// connection is closed after it too.
    pub header_timeout: Duration,
    /// Most connections served at once; more are closed at accept.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            token: None,
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

#[derive(Clone)]
struct AppState {
    actor: Addr<SchedulerActor>,
    shared: Arc<Shared>,
}

/// The router of the scheduler's HTTP endpoints, behind the token check
/// (when `token` is set) and the security headers.
/// The probes `/health` (the process answers) and `/ready` (it serves
/// workers and clients: it listens on QUIC before HTTP starts) need no
/// token: they tell a load balancer or systemd nothing about the cluster.
pub fn router(actor: Addr<SchedulerActor>, shared: Arc<Shared>, token: Option<String>) -> Router {
    routes(actor, shared)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(|| async { "ready\n" }))
        .layer(axum::middleware::from_fn(security_headers))
}

fn routes(actor: Addr<SchedulerActor>, shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/static/app.js", get(app_js))
        .route("/static/app.css", get(app_css))
        .route("/metrics", get(metrics_text))
        .route("/api/cluster", get(cluster))
        .route("/api/adaptive", get(adaptive))
        .route("/api/sd", get(service_discovery))
        .route("/api/dashboard", get(dashboard))
        .route("/api/events", get(events))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/artifacts/{name}", get(artifact))
        .with_state(AppState { actor, shared })
}

/// Serve `app` on `listener` until the process ends: HTTP/1.1, each
/// connection on a task of its own, at most `config.max_connections` at once
/// (a connection past the limit is closed at once, so a flood never queues
/// in front of the others), and every request's headers within
/// `config.header_timeout` (hyper closes a connection that is slower, or
/// idle that long between requests).
pub async fn serve(listener: tokio::net::TcpListener, app: Router, config: HttpConfig) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(64 * 1024);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, never spin.
                tracing::warn!("dashboard: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                "dashboard: refusing a connection from {peer}: {} connections already open (dashboard_max_connections)",
                config.max_connections
            );
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("dashboard: connection from {peer} ended: {e}");
            }
            drop(permit);
        });
    }
}

/// Constant-time comparison (the time taken does not tell how much of a
/// guess was right).
fn same_secret(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The token a request carries: `Authorization: Bearer TOKEN`, or the
/// dashboard's cookie.
fn presented_token(request: &Request) -> Option<&str> {
    let headers = request.headers();
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then_some(value)
        })
}

/// `token` of a query string, percent-decoded.
fn query_token(query: &str) -> Option<String> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// With a token configured: 401 unless the request presents it. The page
/// (`/`) also takes `?token=TOKEN` once: the answer is a redirect to `/`
/// that sets the token as an HttpOnly, SameSite=Strict cookie, so the token
/// leaves the address bar and the page's own requests carry the cookie.
async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token.as_deref() else {
        return next.run(request).await;
    };
    if presented_token(&request).is_some_and(|t| same_secret(t.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    if request.uri().path() == "/" {
        if let Some(given) = request.uri().query().and_then(query_token) {
            if same_secret(given.as_bytes(), token.as_bytes()) {
                let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
                return (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, "/".to_string()),
                        (header::SET_COOKIE, cookie),
                        (header::CACHE_CONTROL, "no-store".to_string()),
                    ],
                )
                    .into_response();
            }
        }
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"stratus\"")],
        "this Stratus dashboard needs its token: send `Authorization: Bearer TOKEN` \
         (the scheduler file's dashboard_token), or open /?token=TOKEN once in a browser\n",
    )
        .into_response()
}

/// Headers on every response (also on 401s and errors).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
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

/// How many workers the cluster wants: `{"target", "minimum", "maximum",
/// "workers", "by_memory", "by_work"}` (an autoscaler's input).
async fn adaptive(State(app): State<AppState>) -> Response {
    match app.actor.send(AdaptiveJson).await {
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
        Some((_, bytes)) => artifact_response(&name, bytes),
        None => not_found(format!("run '{id}' has no artifact '{name}'")),
    }
}

/// A PNG as `image/png`; anything else (artifacts stored before uploads
/// were checked) as a download that no browser renders. The logged content
/// type is never trusted.
fn artifact_response(name: &str, bytes: Vec<u8>) -> Response {
    // Scripts in a document served from here never run, whatever it is.
    let csp = "default-src 'none'; img-src 'self'; sandbox";
    if bytes.starts_with(PNG_SIGNATURE) {
        (
            [
                (header::CONTENT_TYPE, "image/png".to_string()),
                (header::CONTENT_SECURITY_POLICY, csp.to_string()),
            ],
            bytes,
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
                (header::CONTENT_SECURITY_POLICY, csp.to_string()),
            ],
            bytes,
        )
            .into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abcdef0123456789", b"abcdef0123456789"));
        assert!(!same_secret(b"abcdef012345678", b"abcdef0123456789"));
        assert!(!same_secret(b"abcdef0123456788", b"abcdef0123456789"));
        assert!(!same_secret(b"", b"abcdef0123456789"));
    }

    #[test]
    fn the_query_token_is_decoded() {
        assert_eq!(query_token("token=ab%2Bc"), Some("ab+c".into()));
        assert_eq!(query_token("x=1&token=abc"), Some("abc".into()));
        assert_eq!(query_token("x=1"), None);
        assert_eq!(query_token("token=%zz"), None);
        assert_eq!(query_token("token=%4"), Some("%4".into()));
    }
}
