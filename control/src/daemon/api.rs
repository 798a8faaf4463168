//! The local HTTP API (`docs/CONTROL.md`): `GET /v1/state`, `POST /v1/apply`, `GET /metrics`,
//! `GET /v1/rollouts`, `POST /v1/rollouts/{service}/{pause|resume|abort}`, and the flow queries
//! `GET /v1/trace?client=IP[:PORT]&vip=IP:PORT[&proto=udp]` and
//! `GET /v1/flows[?vip=IP[:PORT]][&backend=B][&proto=P][&limit=N]` (see [`super::query`]).
//!
//! Every request passes [`super::auth::Guard`] first (Host, Origin, bearer token; see
//! `docs/CONTROL.md`, "Security of the API"), and `POST /v1/apply` takes YAML only; each
//! refusal is logged as a warning naming the peer.
//!
//! axum on a current-thread tokio runtime of its own thread: the API is a handful of requests a
//! minute from an operator and a scraper, so one thread serves it, and the controller thread
//! never waits on it. Handlers hold no state; each turns its request into a
//! [`Request`] for the controller and awaits the answer, so the API sees exactly what the
//! controller sees, in order with reloads and publishes.

use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::policy::edit::BackendSelector;
use crate::policy::{AdminState, MAX_POLICY_BYTES};

use super::auth::{self, Guard, Refusal};
use super::controller::{ApiFailure, ApplyRequest, BackendStateRequest, Request, RolloutAction};
use super::metrics::CONTENT_TYPE;
use super::query::{FlowsParams, TraceParams};
use super::view::ApiError;

/// How long `apply` waits for its generation to go live unless the request says otherwise.
pub const DEFAULT_APPLY_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
    /// File name for error lines.
    source: Option<String>,
    wait_ms: Option<u64>,
}

fn failure(status: u16, error: impl Into<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        Json(ApiError {
            error: error.into(),
            errors: Vec::new(),
        }),
    )
        .into_response()
}

fn stopping() -> Response {
    failure(503, "the daemon is stopping")
}

/// Sends a request to the controller and waits for its answer.
async fn ask<T>(
    controller: &Sender<Request>,
    make: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    controller.send(make(tx)).ok()?;
    rx.await.ok()
}

async fn state(State(controller): State<Sender<Request>>) -> Response {
    match ask(&controller, Request::State).await {
        Some(view) => Json(view).into_response(),
        None => stopping(),
    }
}

async fn stats(State(controller): State<Sender<Request>>) -> Response {
    match ask(&controller, Request::Stats).await {
        Some(view) => Json(view).into_response(),
        None => stopping(),
    }
}

async fn metrics(State(controller): State<Sender<Request>>) -> Response {
    match ask(&controller, Request::Metrics).await {
        Some(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        None => stopping(),
    }
}

/// Refuses a request that fails [`Guard::check`], logging why and from whom.
async fn check_request(
    State(guard): State<Arc<Guard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    match guard.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(Refusal { status, error }) => {
            guard.refused(peer, request.method(), request.uri().path(), status, &error);
            let mut response = failure(status, error);
            if status == 401 {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
    }
}

async fn apply(
    State(controller): State<Sender<Request>>,
    Extension(guard): Extension<Arc<Guard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<ApplyQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .unwrap_or("");
    if !auth::is_yaml(content_type) {
        let error = format!(
            "a policy is YAML: send it as Content-Type: application/yaml (got `{content_type}`)"
        );
        guard.refused(peer, &Method::POST, "/v1/apply", 415, &error);
        return failure(415, error);
    }
    let source = query
        .source
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<request>".to_owned());
    if body.len() > MAX_POLICY_BYTES {
        let line = format!(
            "{source}: file is larger than {MAX_POLICY_BYTES} bytes; a policy this big is not a \
             policy"
        );
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(ApiError {
                error: line.clone(),
                errors: vec![line],
            }),
        )
            .into_response();
    }
    let policy = match String::from_utf8(body.to_vec()) {
        Ok(text) => text,
        Err(e) => {
            let line = format!(
                "{source}: file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            );
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ApiError {
                    error: line.clone(),
                    errors: vec![line],
                }),
            )
                .into_response();
        }
    };
    let request = ApplyRequest {
        policy,
        source,
        dry_run: query.dry_run,
        wait: query
            .wait_ms
            .map_or(DEFAULT_APPLY_WAIT, Duration::from_millis),
    };
    match ask(&controller, |tx| Request::Apply(request, tx)).await {
        Some(Ok(response)) => Json(response).into_response(),
        Some(Err(ApiFailure { status, body })) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, Json(body)).into_response()
        }
        None => stopping(),
    }
}

#[derive(Debug, Deserialize)]
struct BackendQuery {
    /// `[POOL/]BACKEND`: a backend's name or address.
    backend: Option<String>,
    #[serde(default)]
    dry_run: bool,
    wait_ms: Option<u64>,
}

/// `POST /v1/backends/{drain|undrain|disable|enable}?backend=[POOL/]BACKEND`.
async fn backend_state(
    State(controller): State<Sender<Request>>,
    Path(action): Path<String>,
    Query(query): Query<BackendQuery>,
) -> Response {
    let to = match action.as_str() {
        "drain" => AdminState::Drained,
        "disable" => AdminState::Disabled,
        "undrain" | "enable" => AdminState::InService,
        _ => {
            return failure(
                404,
                format!("no backend action `{action}`; use drain, undrain, disable or enable"),
            )
        }
    };
    let Some(backend) = query.backend.filter(|b| !b.is_empty()) else {
        return failure(400, "name the backend: ?backend=[POOL/]NAME-OR-ADDRESS");
    };
    let request = BackendStateRequest {
        selector: BackendSelector::parse(&backend),
        to,
        dry_run: query.dry_run,
        wait: query
            .wait_ms
            .map_or(DEFAULT_APPLY_WAIT, Duration::from_millis),
    };
    match ask(&controller, |tx| Request::BackendState(request, tx)).await {
        Some(Ok(response)) => Json(response).into_response(),
        Some(Err(ApiFailure { status, body })) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, Json(body)).into_response()
        }
        None => stopping(),
    }
}

async fn rollouts(State(controller): State<Sender<Request>>) -> Response {
    match ask(&controller, Request::Rollouts).await {
        Some(list) => Json(list).into_response(),
        None => stopping(),
    }
}

async fn rollout_action(
    State(controller): State<Sender<Request>>,
    Path((service, action)): Path<(String, String)>,
) -> Response {
    let Some(action) = RolloutAction::parse(&action) else {
        return failure(
            404,
            format!("no rollout action `{action}`; use pause, resume or abort"),
        );
    };
    match ask(&controller, |reply| Request::RolloutAction {
        service,
        action,
        reply,
    })
    .await
    {
        Some(Ok(list)) => Json(list).into_response(),
        Some(Err(ApiFailure { status, body })) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, Json(body)).into_response()
        }
        None => stopping(),
    }
}

async fn trace(
    State(controller): State<Sender<Request>>,
    Query(params): Query<TraceParams>,
) -> Response {
    answer(ask(&controller, |reply| Request::Trace(params, reply)).await)
}

async fn capture(
    State(controller): State<Sender<Request>>,
    Query(params): Query<super::capture::CaptureParams>,
) -> Response {
    answer(ask(&controller, |reply| Request::Capture(params, reply)).await)
}

async fn flows(
    State(controller): State<Sender<Request>>,
    Query(params): Query<FlowsParams>,
) -> Response {
    answer(ask(&controller, |reply| Request::Flows(params, reply)).await)
}

/// A controller's answer as JSON, or its failure with its status.
fn answer<T: serde::Serialize>(result: Option<Result<T, ApiFailure>>) -> Response {
    match result {
        Some(Ok(body)) => Json(body).into_response(),
        Some(Err(ApiFailure { status, body })) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, Json(body)).into_response()
        }
        None => stopping(),
    }
}

async fn not_found() -> Response {
    failure(
        404,
        "no such endpoint; the API has GET /v1/state, POST /v1/apply, GET /v1/rollouts, \
         POST /v1/rollouts/SERVICE/{pause,resume,abort}, GET /v1/trace, GET /v1/flows, \
         POST /v1/capture and GET /metrics",
    )
}

fn router(controller: Sender<Request>, guard: Arc<Guard>) -> Router {
    Router::new()
        .route("/v1/state", get(state))
        .route("/v1/apply", post(apply))
        .route("/v1/rollouts", get(rollouts))
        .route("/v1/backends/{action}", post(backend_state))
        .route("/v1/rollouts/{service}/{action}", post(rollout_action))
        .route("/v1/trace", get(trace))
        .route("/v1/flows", get(flows))
        .route("/v1/stats", get(stats))
        .route("/v1/capture", post(capture))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Room for the largest policy, so the handler can refuse a bigger one with its reason.
        .layer(DefaultBodyLimit::max(MAX_POLICY_BYTES + 64 * 1024))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&guard),
            check_request,
        ))
        .layer(Extension(guard))
        .with_state(controller)
}

/// The running API server.
#[derive(Debug)]
pub struct ApiServer {
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Serves the API on `listener` (already bound, so a busy port is reported before anything
    /// is published) from a thread of its own; `guard` checks every request.
    ///
    /// # Errors
    /// The runtime or the listener cannot be set up.
    pub fn spawn(
        listener: std::net::TcpListener,
        controller: Sender<Request>,
        guard: Guard,
    ) -> std::io::Result<Self> {
        let guard = Arc::new(guard);
        let address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            error!("API listener: {e}");
                            return;
                        }
                    };
                    let served = axum::serve(
                        listener,
                        router(controller, guard)
                            .into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(async move {
                        let _ = shutdown_rx.await;
                    })
                    .await;
                    if let Err(e) = served {
                        error!("API server: {e}");
                    }
                });
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            address,
            shutdown: Some(shutdown_tx),
            done: done_rx,
            thread: Some(thread),
        })
    }

    /// The address the API listens on.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting, lets requests in flight finish for up to `grace`, then returns (a
    /// connection still open after that is dropped with the process).
    pub fn stop(mut self, grace: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.done.recv_timeout(grace).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        } else {
            warn!("API connections still open after {grace:?}; leaving them");
        }
    }
}
