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
pub mod plugin_routes;
pub mod problem;
pub mod tls;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};

use crate::runtime::PluginRegistry;
pub use auth::{AdminToken, Principal, Role, Tokens};
pub use problem::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The plugins.
    pub registry: Arc<PluginRegistry>,
    /// The admin token and the named tokens.
    pub tokens: Arc<Tokens>,
    /// The body size limit in bytes.
    pub body_limit: usize,
    /// `server.client_ip_header`: the header naming the client behind a proxy (lower
    /// case); `None`: the peer address.
    pub client_ip_header: Option<String>,
    /// The time allowed to receive a whole body (`server.body_timeout_ms`).
    pub body_timeout: Duration,
}

impl AppState {
    /// The size and time bounds every body is read under.
    pub fn body_limits(&self) -> body::BodyLimits {
        body::BodyLimits { max_bytes: self.body_limit, timeout: self.body_timeout }
    }
}

/// Registers every route on an actix app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for e in endpoints::ENDPOINTS {
        cfg.route(&endpoints::actix_path(e.path), (e.route)());
    }
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
    let data = web::Data::new(state);
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(configure))
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
