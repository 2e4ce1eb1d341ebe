//! The route table: one list drives both the actix registration and the OpenAPI
//! document, so a route cannot exist without being documented.

use actix_web::{web, Route};

use super::auth::Role;
use super::{handlers, stream};

/// The path of the event stream, whose reply is `text/event-stream` (see [`stream`]).
pub const EVENT_STREAM: &str = "/api/v1/stream";

/// One HTTP endpoint.
pub struct Endpoint {
    /// `GET`, `POST`...; `ANY` for declared plugin routes.
    pub method: &'static str,
    /// The path, with `{params}`.
    pub path: &'static str,
    /// One line for the OpenAPI summary.
    pub summary: &'static str,
    /// The lowest token role it needs (`None`: open to anyone). The handler checks it.
    pub role: Option<Role>,
    /// Whether the request body is JSON passed on.
    pub json_body: bool,
    /// The actix route.
    pub route: fn() -> Route,
}

/// Every endpoint, in registration order (`/plugins/rescan` before `/plugins/{name}`).
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/health",
        summary: "Status and plugin counts by state",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::health),
    },
    Endpoint {
        method: "GET",
        path: "/metrics",
        summary: "Prometheus metrics (text exposition)",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::metrics),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/openapi.json",
        summary: "This OpenAPI document",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::openapi),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/plugins",
        summary: "Every plugin with its state, limits and counters",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::list),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/plugins/rescan",
        summary: "Load new plugin folders, unload removed ones",
        role: Some(Role::Admin),
        json_body: false,
        route: || web::post().to(handlers::rescan),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/plugins/{name}",
        summary: "One plugin: manifest summary, state, limits, counters, last error, sandbox details",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::get),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/plugins/{name}/call/{action}",
        summary: "Call an action; the body is its JSON payload, the reply is the plugin's JSON",
        role: None,
        json_body: true,
        route: || web::post().to(handlers::call),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/plugins/{name}/load",
        summary: "Load a plugin that is not loaded",
        role: Some(Role::Admin),
        json_body: false,
        route: || web::post().to(handlers::load),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/plugins/{name}/reload",
        summary: "Load a new instance beside the current one and switch to it",
        role: Some(Role::Operator),
        json_body: false,
        route: || web::post().to(handlers::reload),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/plugins/{name}/unload",
        summary: "Drain and unload a plugin",
        role: Some(Role::Admin),
        json_body: false,
        route: || web::post().to(handlers::unload),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/plugins/{name}/reset",
        summary: "Bring a failed plugin back",
        role: Some(Role::Operator),
        json_body: false,
        route: || web::post().to(handlers::reset),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/plugins/{name}/disable",
        summary: "Disable a plugin: unload it and keep it unloaded, across restarts too",
        role: Some(Role::Operator),
        json_body: false,
        route: || web::post().to(handlers::disable),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/plugins/{name}/enable",
        summary: "Enable a disabled plugin and load it",
        role: Some(Role::Operator),
        json_body: false,
        route: || web::post().to(handlers::enable),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/state/plugins",
        summary: "What the host remembers of every plugin: enabled, version, tier, source, signer, times",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::plugin_records),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/audit",
        summary: "Admin actions, newest first (?action=, ?target=, ?before=<id>, ?limit=)",
        role: Some(Role::Reader),
        json_body: false,
        route: || web::get().to(handlers::audit_log),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/jobs",
        summary: "Cron jobs: schedule, next run, counts, last recorded run",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::jobs),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/jobs/{id}/run",
        summary: "Run a job now and answer its outcome (409 if it is already running)",
        role: Some(Role::Operator),
        json_body: false,
        route: || web::post().to(handlers::run_job),
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/events/{event}",
        summary: "Emit an event; the reply lists every handler's result",
        role: Some(Role::Admin),
        json_body: true,
        route: || web::post().to(handlers::emit_event),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/hooks",
        summary: "Subscriptions and interceptors",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::hooks),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/hooks/metrics",
        summary: "Per-event metrics",
        role: None,
        json_body: false,
        route: || web::get().to(handlers::hook_metrics),
    },
    Endpoint {
        method: "GET",
        path: EVENT_STREAM,
        summary: "Live events as server-sent events: state, restart, emit, log (warn and above), lagged",
        role: Some(Role::Reader),
        json_body: false,
        route: || web::get().to(stream::get),
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/whoami",
        summary: "Who the token is: its audit actor and its role",
        role: Some(Role::Reader),
        json_body: false,
        route: || web::get().to(handlers::whoami),
    },
    Endpoint {
        method: "ANY",
        path: "/plugins/{name}/{tail}",
        summary: "Routes the plugin declares in its manifest, mapped to its actions",
        role: None,
        json_body: true,
        route: || web::to(handlers::plugin_route),
    },
];

/// The path as actix wants it (`{tail}` matches the rest of the path).
pub fn actix_path(path: &str) -> String {
    path.replace("{tail}", "{tail:.*}")
}
