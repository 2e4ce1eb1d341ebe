//! Request handlers. Each one is thin: parse, call the registry, shape the answer.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::RngCore;
use serde_json::json;

use super::body::{read_json, read_json_value, rejected};
use super::plugin_routes::match_route;
use super::problem::ApiError;
use super::view::{self, View};
use super::{AppState, OpenApiJson, Principal, Role};
use xcore_runtime::CallInput;

type State = web::Data<AppState>;

const REQUEST_ID: &str = "x-request-id";

/// The caller's request id when it is sane, else a fresh one.
fn request_id(req: &HttpRequest) -> String {
    if let Some(v) = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_string();
        }
    }
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Who the client is, for the per-client rate limit: the last entry of the configured
/// header (what the nearest proxy saw) when set and present, else the peer address.
fn client_key(req: &HttpRequest, header: Option<&str>) -> Option<String> {
    if let Some(h) = header {
        let value = req.headers().get_all(h).filter_map(|v| v.to_str().ok()).last();
        if let Some(last) = value.and_then(|v| v.rsplit(',').next()).map(str::trim) {
            if !last.is_empty() {
                return Some(last.to_string());
            }
        }
    }
    req.peer_addr().map(|a| a.ip().to_string())
}

/// A plugin name from the path, checked against the rule of plugin names
/// (`[a-z0-9_-]+`) before anything reaches the registry or the file system: 400
/// `invalid_name` otherwise, so a name can never be a path (`..%2Fother`).
fn plugin_name(state: &AppState, name: &str) -> Result<(), ApiError> {
    if xcore_manifest::is_valid_name(name) {
        return Ok(());
    }
    let shown: String = name.chars().take(80).collect();
    Err(rejected(
        state.registry.metrics(),
        ApiError::new(
            400,
            "invalid_name",
            format!("{shown:?} is not a plugin name (allowed: a-z, 0-9, '_' and '-')"),
        ),
    ))
}

/// The plugin's reply as a 200 `application/json`, once it is known to be JSON: a reply
/// that is not is 502 `invalid_reply` (the host never serves bytes under a content type
/// they do not have). The check reads the reply once without building anything.
fn json_reply(state: &AppState, name: &str, rid: &str, body: Vec<u8>) -> Result<HttpResponse, ApiError> {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        state.registry.metrics().plugin(name).error(xcore_plugin_abi::codes::INVALID_REPLY);
        return Err(ApiError::new(
            502,
            xcore_plugin_abi::codes::INVALID_REPLY,
            format!("plugin '{name}' answered {} bytes that are not JSON: {e}", body.len()),
        ));
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((REQUEST_ID, rid.to_string()))
        .body(body))
}

pub(super) async fn health(state: State) -> HttpResponse {
    let counts = state.registry.counts_by_state();
    let total: usize = counts.values().sum();
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "plugins": {"total": total, "by_state": counts},
    }))
}

/// `GET /api/v1/whoami`: the token's audit actor and role (the dashboard's sign-in checks
/// the token with it and shows who is signed in).
pub(super) async fn whoami(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = authorize(&state, &req, Role::Reader)?;
    Ok(HttpResponse::Ok().json(json!({ "actor": who.actor(), "role": who.role().as_str() })))
}

pub(super) async fn metrics(state: State) -> HttpResponse {
    state.registry.refresh_gauges();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(state.registry.metrics().encode())
}

pub(super) async fn list(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let view = read_view(&state, &req)?;
    let infos: Vec<_> = state
        .registry
        .names()
        .iter()
        .filter_map(|n| state.registry.info(n))
        .map(|i| info_json(i, view))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "plugins": infos })))
}

/// A plugin's info as JSON, in the view given.
fn info_json(info: xcore_runtime::registry::PluginInfo, view: View) -> serde_json::Value {
    let mut v = serde_json::to_value(info).unwrap_or_default();
    if view.is_public() {
        view::plugin_info(&mut v);
    }
    v
}

fn info_or_404(state: &AppState, name: &str, view: View) -> Result<HttpResponse, ApiError> {
    state
        .registry
        .info(name)
        .map(|i| HttpResponse::Ok().json(info_json(i, view)))
        .ok_or_else(|| ApiError::new(404, "unknown_plugin", format!("no plugin named '{name}'")))
}

pub(super) async fn get(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = read_view(&state, &req)?;
    plugin_name(&state, &path)?;
    info_or_404(&state, &path, view)
}

/// The view of a read route ([`View::of_read`]); a refused token counts in
/// `xcore_http_rejected_total` like any other refusal.
fn read_view(state: &AppState, req: &HttpRequest) -> Result<View, ApiError> {
    View::of_read(state, req).map_err(|e| rejected(state.registry.metrics(), e))
}

/// A failed call as the client may see it (see [`view::call_failure`]).
fn call_error(state: &AppState, req: &HttpRequest, f: xcore_runtime::CallFailure) -> ApiError {
    match View::of_call(state, req) {
        View::Public => view::call_failure(f).into(),
        View::Full => f.into(),
    }
}

pub(super) async fn call(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (name, action) = path.into_inner();
    let rid = request_id(&req);
    let tag = |e: ApiError| e.with_request_id(&rid);
    plugin_name(&state, &name).map_err(tag)?;
    let body = read_json(&req, payload, state.body_limits(), state.registry.metrics()).await.map_err(tag)?;
    let input = CallInput {
        action,
        payload: body.to_vec(),
        caller: "http".into(),
        request_id: rid.clone(),
        origin: None,
    };
    let client = || client_key(&req, state.client_ip_header.as_deref());
    let reply =
        state.registry.call_from(&name, input, client).await.map_err(|e| tag(call_error(&state, &req, e)))?;
    json_reply(&state, &name, &rid, reply).map_err(tag)
}

pub(super) async fn plugin_route(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The name as actix decoded it; the rest of the path raw, as the client sent it, for
    // the matcher to split and decode once (actix has already decoded `{tail}`, except
    // `%2F`, `%25` and `%2B`, so decoding it again would decode twice).
    let (name, _) = path.into_inner();
    let rid = request_id(&req);
    let tail = raw_tail(req.uri().path());
    plugin_route_inner(&state, &req, &name, tail, payload, &rid).await.map_err(|e| e.with_request_id(&rid))
}

/// What follows `/plugins/{name}/` in the raw path (empty if nothing does).
fn raw_tail(path: &str) -> &str {
    let rest = path.strip_prefix("/plugins/").unwrap_or_default();
    rest.split_once('/').map(|(_, tail)| tail).unwrap_or_default()
}

async fn plugin_route_inner(
    state: &AppState,
    req: &HttpRequest,
    name: &str,
    tail: &str,
    payload: web::Payload,
    rid: &str,
) -> Result<HttpResponse, ApiError> {
    plugin_name(state, name)?;
    let manifest = state
        .registry
        .manifest(name)
        .ok_or_else(|| ApiError::new(404, "unknown_plugin", format!("no plugin named '{name}'")))?;
    let (route, params) = match_route(&manifest.routes, req.method().as_str(), tail.as_bytes())
        .map_err(|e| rejected(state.registry.metrics(), ApiError::new(400, "invalid_path", e.to_string())))?
        .ok_or_else(|| {
            ApiError::new(
                404,
                "not_found",
                format!("plugin '{name}' declares no route {} /{tail}", req.method()),
            )
        })?;
    let body = read_json_value(req, payload, state.body_limits(), state.registry.metrics()).await?;
    let query: BTreeMap<String, String> =
        web::Query::<BTreeMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .map_err(|e| ApiError::new(400, "bad_request", format!("query string: {e}")))?;
    let payload = json!({ "params": params, "query": query, "body": body });
    let input = CallInput {
        action: route.action.clone(),
        payload: serde_json::to_vec(&payload).unwrap_or_default(),
        caller: "http".into(),
        request_id: rid.to_string(),
        origin: None,
    };
    let client = || client_key(req, state.client_ip_header.as_deref());
    let reply = state.registry.call_from(name, input, client).await.map_err(|e| call_error(state, req, e))?;
    json_reply(state, name, rid, reply)
}

/// The request's token with at least `needed`; a 401 or 403 counts in
/// `xcore_http_rejected_total{code="unauthorized"|"forbidden"}`.
fn authorize(state: &AppState, req: &HttpRequest, needed: Role) -> Result<Principal, ApiError> {
    state.tokens.authorize(req, needed).map_err(|e| rejected(state.registry.metrics(), e))
}

/// Who made an admin request, for the audit log: `admin@<peer>` for the admin token,
/// `token:NAME@<peer>` for a named token.
fn actor(who: &Principal, req: &HttpRequest) -> String {
    match req.peer_addr() {
        Some(a) => format!("{}@{}", who.actor(), a.ip()),
        None => who.actor(),
    }
}

/// Appends to the audit log, off the async workers. A failure to record is logged, not
/// returned: the action itself already happened.
async fn audit(
    state: &AppState,
    who: &Principal,
    req: &HttpRequest,
    action: &str,
    target: &str,
    error: Option<String>,
) {
    let Some(store) = state.services.store().cloned() else {
        return;
    };
    let (actor, action, target) = (actor(who, req), action.to_string(), target.to_string());
    let outcome = if error.is_some() { "error" } else { "ok" };
    let written = web::block(move || store.audit(&actor, &action, &target, outcome, error.as_deref())).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::error!(target: "xcore::api", "audit log not written: {e}"),
        Err(e) => log::error!(target: "xcore::api", "audit log not written: {e}"),
    }
}

/// The admin operations on one plugin.
#[derive(Clone, Copy)]
enum PluginOp {
    Load,
    Reload,
    Unload,
    Reset,
    Disable,
    Enable,
}

impl PluginOp {
    /// The lowest role that may do it.
    fn role(self) -> Role {
        match self {
            PluginOp::Load | PluginOp::Unload => Role::Admin,
            PluginOp::Reload | PluginOp::Reset | PluginOp::Disable | PluginOp::Enable => Role::Operator,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PluginOp::Load => "load",
            PluginOp::Reload => "reload",
            PluginOp::Unload => "unload",
            PluginOp::Reset => "reset",
            PluginOp::Disable => "disable",
            PluginOp::Enable => "enable",
        }
    }
}

async fn plugin_op(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    op: PluginOp,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&state, &req, op.role())?;
    let (r, name) = (&state.registry, path.into_inner());
    plugin_name(&state, &name)?;
    log::info!(target: "xcore::api", "{}: {} {name}", who.actor(), op.name());
    let result = match op {
        PluginOp::Load => r.load(&name).await,
        PluginOp::Reload => r.reload(&name).await,
        PluginOp::Unload => r.unload(&name).await,
        PluginOp::Reset => r.reset(&name).await,
        PluginOp::Disable => r.disable(&name).await,
        PluginOp::Enable => r.enable(&name).await,
    };
    audit(&state, &who, &req, op.name(), &name, result.as_ref().err().map(|e| e.to_string())).await;
    result?;
    info_or_404(&state, &name, View::Full)
}

pub(super) async fn load(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    plugin_op(state, req, path, PluginOp::Load).await
}

pub(super) async fn reload(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    plugin_op(state, req, path, PluginOp::Reload).await
}

pub(super) async fn unload(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    plugin_op(state, req, path, PluginOp::Unload).await
}

pub(super) async fn reset(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    plugin_op(state, req, path, PluginOp::Reset).await
}

pub(super) async fn disable(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    plugin_op(state, req, path, PluginOp::Disable).await
}

pub(super) async fn enable(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    plugin_op(state, req, path, PluginOp::Enable).await
}

pub(super) async fn rescan(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = authorize(&state, &req, Role::Admin)?;
    log::info!(target: "xcore::api", "{}: rescan", who.actor());
    let report = state.registry.rescan().await;
    let detail = (!report.failed.is_empty()).then(|| format!("failed: {:?}", report.failed));
    audit(&state, &who, &req, "rescan", "plugins", detail).await;
    Ok(HttpResponse::Ok().json(report))
}

pub(super) async fn emit_event(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&state, &req, Role::Admin)?;
    let event = path.into_inner();
    let payload = read_json_value(&req, payload, state.body_limits(), state.registry.metrics()).await?;
    log::info!(target: "xcore::api", "{}: emit {event}", who.actor());
    let report = state.registry.hooks().emit(&event, payload).await;
    audit(&state, &who, &req, "emit", &event, None).await;
    Ok(HttpResponse::Ok().json(report))
}

pub(super) async fn hooks(state: State) -> HttpResponse {
    let hooks = state.registry.hooks();
    HttpResponse::Ok()
        .json(json!({ "subscriptions": hooks.list(), "interceptors": hooks.list_interceptors() }))
}

pub(super) async fn hook_metrics(state: State) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "events": state.registry.hooks().metrics_snapshot() }))
}

/// `GET /api/v1/state/plugins`: what the host remembers of every plugin (enabled,
/// version, tier, source, signer, times), including plugins not loaded now.
pub(super) async fn plugin_records(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let view = read_view(&state, &req)?;
    let store = state
        .services
        .store()
        .cloned()
        .ok_or_else(|| ApiError::new(503, "store_unavailable", "this host has no database connected"))?;
    let records = web::block(move || store.plugin_records())
        .await
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?
        .map_err(|e| view::store_unavailable(view, e.to_string()))?;
    let records: Vec<_> = records
        .iter()
        .map(|r| {
            let mut v = r.to_json();
            if view.is_public() {
                view::plugin_record(&mut v);
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "plugins": records })))
}

/// `GET /api/v1/audit?action=&target=&before=&limit=`: newest first.
pub(super) async fn audit_log(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req, Role::Reader)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        action: Option<String>,
        target: Option<String>,
        before: Option<i64>,
        limit: Option<usize>,
    }
    let p = web::Query::<Params>::from_query(req.query_string())
        .map_err(|e| ApiError::new(400, "bad_request", format!("query string: {e}")))?
        .into_inner();
    let store = state
        .services
        .store()
        .cloned()
        .ok_or_else(|| ApiError::new(503, "store_unavailable", "this host has no database connected"))?;
    let q = xcore_db::store::audit::AuditQuery {
        action: p.action,
        target: p.target,
        before: p.before,
        limit: p.limit.unwrap_or(100),
    };
    let entries = web::block(move || store.audit_entries(&q))
        .await
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(503, "store_unavailable", e.to_string()))?;
    let next = if entries.len() >= p.limit.unwrap_or(100).clamp(1, 1000) {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    let entries: Vec<_> = entries.iter().map(|e| e.to_json()).collect();
    Ok(HttpResponse::Ok().json(json!({ "entries": entries, "next_before": next })))
}

fn scheduler(state: &AppState) -> Result<std::sync::Arc<xcore_services::scheduler::Scheduler>, ApiError> {
    state
        .services
        .scheduler()
        .cloned()
        .ok_or_else(|| ApiError::new(503, "unavailable", "this host runs no scheduler"))
}

/// `GET /api/v1/jobs`: every job with its next run and its last recorded run.
pub(super) async fn jobs(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let view = read_view(&state, &req)?;
    let scheduler = scheduler(&state)?;
    let jobs = scheduler.list();
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    // The last run comes from job_runs, so it survives a restart.
    let last: Vec<Option<serde_json::Value>> = match scheduler.store().cloned() {
        Some(store) => web::block(move || {
            ids.iter()
                .map(|id| store.job_history(id, 1).map(|h| h.first().map(|r| r.to_json())))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?
        .map_err(|e| view::store_unavailable(view, e.to_string()))?,
        None => vec![None; jobs.len()],
    };
    let out: Vec<serde_json::Value> = jobs
        .into_iter()
        .zip(last)
        .map(|(j, last)| {
            let mut v = serde_json::to_value(j).unwrap_or_default();
            v["last_run"] = last.unwrap_or(serde_json::Value::Null);
            if view.is_public() {
                view::job(&mut v);
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "jobs": out })))
}

/// `POST /api/v1/jobs/{id}/run`: runs a job now and answers its outcome.
pub(super) async fn run_job(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&state, &req, Role::Operator)?;
    let id = path.into_inner();
    let scheduler = scheduler(&state)?;
    log::info!(target: "xcore::api", "{}: run job {id}", who.actor());
    let result = scheduler.run_now(&id).await;
    let detail = match &result {
        Ok(o) => o.error.clone(),
        Err(e) => Some(e.to_string()),
    };
    audit(&state, &who, &req, "job.run", &id, detail).await;
    match result {
        Ok(outcome) => Ok(HttpResponse::Ok().json(outcome)),
        Err(e @ xcore_services::scheduler::RunError::Unknown(_)) => {
            Err(ApiError::new(404, "unknown_job", e.to_string()))
        }
        Err(e @ xcore_services::scheduler::RunError::Overlap(_)) => {
            Err(ApiError::new(409, "conflict", e.to_string()))
        }
    }
}

/// The document [`super::serve`] built once at start, with the serving plugins' actions
/// and routes added (they change while the server runs).
pub(super) async fn openapi(doc: web::Data<OpenApiJson>, state: web::Data<AppState>) -> HttpResponse {
    let mut doc = doc.base().clone();
    super::plugin_docs::add(&mut doc, &state.registry.described());
    HttpResponse::Ok().content_type(header::ContentType::json()).body(doc.to_string())
}

pub(super) async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(404, "not_found", format!("no route {} {}", req.method(), req.path())))
}
