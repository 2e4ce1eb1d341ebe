//! The HTTP control API (actix-web).
//!
//! | route | who |
//! |---|---|
//! | `GET /health`, `GET /metrics`, `GET /api/v1/openapi.json` | anyone |
//! | `GET /api/v1/plugins`, `GET /api/v1/plugins/{name}` | anyone (the public view, see [`view`]; a reader sees all) |
//! | `POST /api/v1/plugins/{name}/call/{action}` | anyone (clients) |
//! | `POST /api/v1/plugins/{name}/{reload,reset,disable,enable}` | operator (or admin) |
//! | `POST /api/v1/plugins/{name}/{load,unload}`, `POST /api/v1/plugins/rescan` | admin |
//! | `GET /api/v1/audit` | reader (or higher): every admin action, newest first |
//! | `GET /api/v1/jobs` | anyone: cron jobs; `POST /api/v1/jobs/{id}/run`: operator |
//! | `POST /api/v1/events/{event}` | admin: emit an event, answer every handler's result |
//! | `GET /api/v1/hooks`, `GET /api/v1/hooks/metrics` | anyone: subscriptions, per-event metrics |
//! | `GET /api/v1/stream` | reader: live events as server-sent events (see [`stream`]) |
//! | `GET /api/v1/whoami` | reader: the token's actor and role |
//! | `GET /ui/...`, `GET /` (redirects to `/ui/`) | anyone: the dashboard's static files (see [`ui`]); not in the OpenAPI document, which describes the API the dashboard uses |
//! | `ANY /plugins/{name}/...` | routes the plugin declares |
//!
//! Roles (see [`auth`]): `admin` > `operator` > `reader`; a token of a lower role than a
//! route needs gets 403 `forbidden`, no token or an unknown one 401.
//!
//! Calls go to `/call/{action}`, a segment of their own, so an action named `reload` is
//! just an action and can never shadow an admin route (it did in the Python original).

pub mod auth;
pub mod body;
pub mod endpoints;
mod handlers;
pub mod openapi;
pub mod plugin_docs;
pub mod plugin_routes;
pub mod problem;
pub mod stream;
pub mod tls;
pub mod ui;
pub mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpServer};

pub use auth::{AdminToken, Principal, Role, Tokens};
pub use problem::ApiError;
use xcore_runtime::PluginRegistry;
use xcore_services::Services;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The plugins.
    pub registry: Arc<PluginRegistry>,
    /// The host's services: its records (audit log, job runs), the scheduler.
    pub services: Arc<Services>,
    /// The admin token and the named tokens.
    pub tokens: Arc<Tokens>,
    /// The body size limit in bytes.
    pub body_limit: usize,
    /// `server.client_ip_header`: the header naming the client behind a proxy (lower
    /// case); `None`: the peer address.
    pub client_ip_header: Option<String>,
    /// The time allowed to receive a whole body (`server.body_timeout_ms`).
    pub body_timeout: Duration,
    /// The live events of `GET /api/v1/stream`.
    pub stream: Arc<stream::StreamHub>,
    /// When the host started (`uptime_seconds` of `GET /health`).
    pub started: Instant,
}

impl AppState {
    /// The size and time bounds every body is read under.
    pub fn body_limits(&self) -> body::BodyLimits {
        body::BodyLimits { max_bytes: self.body_limit, timeout: self.body_timeout }
    }
}

/// The control API's OpenAPI document ([`openapi::document`]), built once when the
/// server starts; `GET /api/v1/openapi.json` answers it with the serving plugins'
/// operations added ([`plugin_docs`]). It lives here, not in [`openapi`], so that the
/// handlers need not import the module that reads the route table that names them:
/// inside `api/` the dependencies run one way (`openapi` -> `endpoints` -> `handlers`,
/// and this module joins them).
#[derive(Clone)]
pub struct OpenApiJson(std::sync::Arc<serde_json::Value>);

impl OpenApiJson {
    /// Keeps `doc`.
    pub fn new(doc: &serde_json::Value) -> Self {
        OpenApiJson(std::sync::Arc::new(doc.clone()))
    }

    /// The control API's part of the document.
    pub fn base(&self) -> &serde_json::Value {
        &self.0
    }
}

/// Registers every route on an actix app, and `doc` as the app data the
/// `GET /api/v1/openapi.json` handler answers (built once by [`serve`], shared by every
/// worker).
pub fn configure(cfg: &mut web::ServiceConfig, doc: web::Data<OpenApiJson>) {
    cfg.app_data(doc);
    for e in endpoints::ENDPOINTS {
        cfg.route(&endpoints::actix_path(e.path), (e.route)());
    }
    ui::configure(cfg);
    cfg.default_service(web::to(handlers::not_found));
}

/// Server settings.
#[derive(Debug)]
pub struct ServeOptions {
    /// Bind address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Worker threads (0: one per CPU).
    pub workers: usize,
    /// Graceful shutdown timeout.
    pub shutdown_timeout_seconds: u64,
    /// TLS (`server.tls`, built by [`tls::server_config`]); `None` is plain HTTP.
    pub tls: Option<rustls::ServerConfig>,
}

/// Runs the server until SIGINT/SIGTERM; actix stops accepting, drains open requests up to
/// the shutdown timeout, and returns.
pub async fn serve(state: AppState, opts: ServeOptions) -> std::io::Result<()> {
    // Open event streams would hold the graceful stop for its whole timeout: they end
    // as soon as the stop signal comes (tokio hands each signal to every listener, so
    // actix gets it too).
    let hub = state.stream.clone();
    actix_web::rt::spawn(async move {
        stop_signal().await;
        hub.close();
    });
    let data = web::Data::new(state);
    let doc = web::Data::new(OpenApiJson::new(&openapi::document()));
    let server = HttpServer::new(move || {
        let doc = doc.clone();
        App::new().app_data(data.clone()).configure(move |cfg| configure(cfg, doc))
    })
    .shutdown_timeout(opts.shutdown_timeout_seconds);
    let (mut server, scheme) = match opts.tls {
        Some(tls) => (server.bind_rustls_0_23((opts.host.as_str(), opts.port), tls)?, "https"),
        None => (server.bind((opts.host.as_str(), opts.port))?, "http"),
    };
    if opts.workers > 0 {
        server = server.workers(opts.workers);
    }
    for addr in server.addrs() {
        log::info!(target: "xcore::api", "listening on {scheme}://{addr}");
    }
    server.run().await
}

/// The first SIGTERM or SIGINT (the signals actix stops on); never, if neither can be
/// listened for.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The sibling modules of the api crate a source file names through `super::` or
    /// `crate::` (comments skipped; `use super::{a, b::c}` names `a` and `b`).
    fn siblings_named(source: &str) -> BTreeSet<String> {
        let code: String =
            source.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        let mut found = BTreeSet::new();
        for prefix in ["super::", "crate::"] {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                let group = match rest.strip_prefix('{') {
                    Some(inner) => inner.split('}').next().unwrap_or(""),
                    None => rest,
                };
                for item in group.split(',') {
                    let first: String =
                        item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !first.is_empty() {
                        found.insert(first);
                    }
                }
            }
        }
        found
    }

    #[test]
    fn dependencies_inside_api_run_one_way() {
        let handlers = siblings_named(include_str!("handlers.rs"));
        for forbidden in ["endpoints", "openapi"] {
            assert!(!handlers.contains(forbidden), "handlers.rs names {forbidden}: {handlers:?}");
        }
        let endpoints = siblings_named(include_str!("endpoints.rs"));
        assert!(endpoints.contains("handlers"), "{endpoints:?}");
        assert!(!endpoints.contains("openapi"), "endpoints.rs names openapi: {endpoints:?}");
        let openapi = siblings_named(include_str!("openapi.rs"));
        assert!(openapi.contains("endpoints"), "{openapi:?}");
        assert!(!openapi.contains("handlers"), "openapi.rs names handlers: {openapi:?}");
        // The scanner itself sees what it must.
        let probe =
            siblings_named("use super::{a, b::C};\nlet x = super::c::f(); // super::d\ncrate::e::g();");
        assert_eq!(probe, BTreeSet::from(["a", "b", "c", "e"].map(String::from)));
    }
}
