//! Request handlers. Each one is thin: parse, call the registry, shape the answer.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::RngCore;
use serde_json::json;

use super::body::read_json;
use super::plugin_routes::match_route;
use super::problem::ApiError;
use super::AppState;
use crate::runtime::CallInput;

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

fn json_reply(rid: &str, body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((REQUEST_ID, rid.to_string()))
        .body(body)
}

pub(super) async fn health(state: State) -> HttpResponse {
    let counts = state.registry.counts_by_state();
    let total: usize = counts.values().sum();
    HttpResponse::Ok().json(json!({"status": "ok", "plugins": {"total": total, "by_state": counts}}))
}

pub(super) async fn metrics(state: State) -> HttpResponse {
    state.registry.refresh_gauges();
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(state.registry.metrics().encode())
}

pub(super) async fn list(state: State) -> HttpResponse {
    let infos: Vec<_> = state.registry.names().iter().filter_map(|n| state.registry.info(n)).collect();
    HttpResponse::Ok().json(json!({ "plugins": infos }))
}

fn info_or_404(state: &AppState, name: &str) -> Result<HttpResponse, ApiError> {
    state
        .registry
        .info(name)
        .map(|i| HttpResponse::Ok().json(i))
        .ok_or_else(|| ApiError::new(404, "unknown_plugin", format!("no plugin named '{name}'")))
}

pub(super) async fn get(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    info_or_404(&state, &path)
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
    let body = read_json(&req, payload, state.body_limit).await.map_err(tag)?;
    let input = CallInput {
        action,
        payload: body.to_vec(),
        caller: "http".into(),
        request_id: rid.clone(),
        origin: None,
    };
    let reply = state.registry.call(&name, input).await.map_err(|e| tag(e.into()))?;
    Ok(json_reply(&rid, reply))
}

pub(super) async fn plugin_route(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (name, tail) = path.into_inner();
    let rid = request_id(&req);
    plugin_route_inner(&state, &req, &name, &tail, payload, &rid).await.map_err(|e| e.with_request_id(&rid))
}

async fn plugin_route_inner(
    state: &AppState,
    req: &HttpRequest,
    name: &str,
    tail: &str,
    payload: web::Payload,
    rid: &str,
) -> Result<HttpResponse, ApiError> {
    let manifest = state
        .registry
        .manifest(name)
        .ok_or_else(|| ApiError::new(404, "unknown_plugin", format!("no plugin named '{name}'")))?;
    let (route, params) = match_route(&manifest.routes, req.method().as_str(), tail).ok_or_else(|| {
        ApiError::new(404, "not_found", format!("plugin '{name}' declares no route {} /{tail}", req.method()))
    })?;
    let body = read_json(req, payload, state.body_limit).await?;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
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
    let reply = state.registry.call(name, input).await?;
    Ok(json_reply(rid, reply))
}

async fn admin<F, Fut>(
    state: &State,
    req: &HttpRequest,
    op: &str,
    name: &str,
    f: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::runtime::RegistryError>>,
{
    state.admin.check(req)?;
    log::info!(target: "xcore::api", "admin: {op} {name}");
    f().await?;
    info_or_404(state, name)
}

pub(super) async fn load(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (r, name) = (state.registry.clone(), path.into_inner());
    let n = name.clone();
    admin(&state, &req, "load", &name, || async move { r.load(&n).await }).await
}

pub(super) async fn reload(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (r, name) = (state.registry.clone(), path.into_inner());
    let n = name.clone();
    admin(&state, &req, "reload", &name, || async move { r.reload(&n).await }).await
}

pub(super) async fn unload(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (r, name) = (state.registry.clone(), path.into_inner());
    let n = name.clone();
    admin(&state, &req, "unload", &name, || async move { r.unload(&n).await }).await
}

pub(super) async fn reset(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (r, name) = (state.registry.clone(), path.into_inner());
    let n = name.clone();
    admin(&state, &req, "reset", &name, || async move { r.reset(&n).await }).await
}

pub(super) async fn rescan(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.admin.check(&req)?;
    log::info!(target: "xcore::api", "admin: rescan");
    let report = state.registry.rescan().await;
    Ok(HttpResponse::Ok().json(report))
}

pub(super) async fn emit_event(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.admin.check(&req)?;
    let event = path.into_inner();
    let body = read_json(&req, payload, state.body_limit).await?;
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    log::info!(target: "xcore::api", "admin: emit {event}");
    let report = state.registry.hooks().emit(&event, payload).await;
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

pub(super) async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::document())
}

pub(super) async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(404, "not_found", format!("no route {} {}", req.method(), req.path())))
}
