//! silencio-server: the identification HTTP API of El Silencio Acoustic Explorer (issue 6).
//!
//! - [`app`] builds the axum router over an [`AppState`] (tests drive it with tower's
//!   `oneshot`, no socket); [`serve`] / [`bind`] run it on a socket with graceful shutdown.
//! - [`engine`]: dynamic batching per loaded model version (bounded admission, two priority
//!   queues, replica threads, cancelled requests dropped before inference).
//! - [`state`]: loaded versions, canary routing, promote/rollback by pointer swap.
//! - Routes: [`routes`] (identify, species, models, health, metrics, sessions, feedback),
//!   [`tour`] (WebSocket tour-guide mode), [`admin`]; [`openapi`] documents them.
//! - Durable state (feedback log, passive sampling, recent requests for feedback, sessions, API
//!   keys): [`feedback`], [`sampling`], [`recent`], [`sessions`], [`auth`].
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod engine;
#[allow(missing_docs)]
pub mod error;
pub mod feedback;
pub mod metrics;
pub mod openapi;
pub mod recent;
pub mod routes;
pub mod sampling;
pub mod served;
pub mod sessions;
pub mod state;
pub mod tour;
pub mod upload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use config::{EngineConfig, ServerConfig, generate_api_key};
pub use error::{Error, Result};
pub use state::AppState;

/// The whole API over `state`, with its tower layers (outermost first):
/// - tracing: one span per request (method, URI, status, latency) from tower-http;
/// - [`auth::identify_caller`]: marks each request keyed or not;
/// - request metrics per route template ([`routes::track`]);
/// - on the `/v1` routes: a deadline (`request_timeout`, 503 `unavailable`) and a cap on
///   requests in flight (`max_in_flight`) that sheds what is beyond it at once (429
///   `overloaded`) rather than queueing it; health, readiness and metrics stay outside both,
///   so an overloaded server can still be watched;
/// - [`auth::require_key`] on the routes that need the key (feedback, admin, reading
///   sessions).
///
/// The routes come from [`keyed_routes`], [`v1_routes`] and [`ops_routes`], whose handlers'
/// `#[utoipa::path]` both route them and document them: the OpenAPI document served at
/// `/openapi.json` is the router's own (utoipa-axum), so a route cannot miss its docs.
pub fn app(state: AppState) -> Router {
    use tower::ServiceBuilder;

    let cfg = state.config();
    let keyed = keyed_routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_key,
    ));
    let api = v1_routes().merge(keyed).route_layer(
        ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(layer_error(
                cfg.request_timeout,
            )))
            .load_shed()
            // One semaphore for all the routes (a plain concurrency limit is per route).
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                cfg.max_in_flight,
            ))
            .timeout(cfg.request_timeout),
    );
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api)
        .merge(ops_routes())
        .split_for_parts();
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .route_layer(axum::middleware::from_fn(routes::track))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::identify_caller,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The `/v1` routes that need the API key (reading sessions, feedback, admin).
pub fn keyed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(routes::session))
        .routes(routes!(routes::feedback))
        .routes(routes!(admin::load_model))
        .routes(routes!(admin::promote))
        .routes(routes!(admin::rollback))
}

/// The `/v1` routes open to every caller (identification, taxonomy, loaded models, streams).
pub fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(routes::identify))
        .routes(routes!(routes::species))
        .routes(routes!(routes::models))
        .routes(routes!(tour::stream))
}

/// Health, readiness and metrics: outside the `/v1` deadline and in-flight cap.
pub fn ops_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::readyz))
        .routes(routes!(routes::metrics))
}

/// The answer when the deadline or the in-flight cap stops a request.
fn layer_error(
    timeout: std::time::Duration,
) -> impl Fn(tower::BoxError) -> std::future::Ready<Error> + Clone + Send + Sync + 'static {
    move |e: tower::BoxError| {
        std::future::ready(if e.is::<tower::timeout::error::Elapsed>() {
            Error::Unavailable(format!(
                "the request took longer than the server's deadline of {} s",
                timeout.as_secs()
            ))
        } else if e.is::<tower::load_shed::error::Overloaded>() {
            crate::metrics::rejected("overloaded");
            Error::Overloaded { retry_after_s: 1 }
        } else {
            Error::Internal(format!("request layer: {e}"))
        })
    }
}

/// How long a shutdown waits for open streams to send their last window.
pub const STREAM_DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// A server bound to its address, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
    model: (silencio_infer::ModelSpec, String),
}

/// Checks `config`, finds the model to serve, opens the stores and binds the address. The
/// model is loaded by [`Server::run`], after the socket is up, so `/healthz` answers at once
/// and `/readyz` once the model is warm.
pub async fn bind(config: ServerConfig) -> Result<Server> {
    config.validate()?;
    let model = config.model_spec()?;
    let addr = config.addr;
    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("bind {addr}"), e))?;
    Ok(Server {
        listener,
        state,
        model,
    })
}

impl Server {
    /// The bound address (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("local address", e))
    }

    /// The shared state (its API key, models, stores).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Loads the model, serves until `shutdown` resolves, then stops accepting, lets the
    /// requests in flight finish, and returns. A model that fails to load stops the server
    /// with that error.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            listener,
            state,
            model: (spec, source),
        } = self;
        let failed: Arc<Mutex<Option<Error>>> = Arc::default();
        let stop = Arc::new(tokio::sync::Notify::new());
        {
            let (state, failed, stop) = (state.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = state.load_stable_spec(spec, source.clone()).await {
                    tracing::error!(model = %source, error = %e, "cannot load the model");
                    *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                    stop.notify_one();
                }
            });
        }
        let signal_state = state.clone();
        let signal = async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutdown requested: draining requests in flight"),
                _ = stop.notified() => {}
            }
            signal_state.begin_shutdown();
        };
        axum::serve(listener, app(state.clone()))
            .with_graceful_shutdown(signal)
            .await
            .map_err(|e| Error::io("serving", e))?;
        // Upgraded WebSockets are no longer HTTP connections: wait for them to flush and close.
        if !state.streams_closed(STREAM_DRAIN).await {
            tracing::warn!("streams still open after {STREAM_DRAIN:?}; closing them");
        }
        match failed.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// [`bind`] then [`Server::run`].
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    bind(config).await?.run(shutdown).await
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub use silencio_common::shutdown_signal;

/// For the `silencio serve` binary: a multi-threaded runtime serving `config` until SIGINT or
/// SIGTERM; `on_bound` is told the bound address before the model loads.
pub fn serve_blocking(config: ServerConfig, on_bound: impl FnOnce(SocketAddr)) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    rt.block_on(async move {
        let server = bind(config).await?;
        on_bound(server.local_addr()?);
        server.run(shutdown_signal()).await
    })
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); for binaries. A second call is a
/// no-op.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    /// Routes are added with `.routes(routes!(handler))` only, which routes and documents them
    /// at once: a plain `route`, `route_service`, `nest_service` or fallback here would serve a
    /// path the OpenAPI document misses.
    #[test]
    fn routes_are_added_only_with_their_docs() {
        let src = include_str!("lib.rs");
        for name in [
            "route",
            "route_service",
            "nest",
            "nest_service",
            "fallback",
            "fallback_service",
        ] {
            let call = format!(".{name}(");
            assert!(
                !src.contains(&call),
                "lib.rs calls `{call}`: add routes with `.routes(routes!(handler))`"
            );
        }
    }
}
