//! `GET /api/v1/stream`: what happens in the host, live, as server-sent events
//! (`text/event-stream`), for the dashboard and for any API client.
//!
//! One [`StreamHub`] per server fans events out to every open stream:
//!
//! | SSE `event:` | what | fed by |
//! |---|---|---|
//! | `state` | a plugin's state changed (`plugin.loaded`, `reloaded`, `unloaded`, `disabled`, `enabled`, `failed`, `reload_failed`) | the hook manager |
//! | `restart` | the supervisor restarted a plugin or saw it crash (`plugin.crashed`, `plugin.restarted`) | the hook manager |
//! | `emit` | any other event emitted (by the host, a plugin, a job, `POST /api/v1/events`) | the hook manager |
//! | `log` | a log line at `warn` or above | the binary's log4rs appender, through [`LogTap`] |
//! | `lagged` | this stream fell behind and `dropped` events were lost | the stream itself |
//!
//! The hook events are observed by a pre-interceptor on `**` that runs before every other
//! one and always continues: it sees each emit, changes nothing, and appears in
//! `GET /api/v1/hooks` (owner `xcore-api`). `data:` is one JSON object per event: `seq`
//! (grows by one per event published), `at` (RFC 3339), and the event's fields.
//!
//! Bounds, each with a metric:
//! - at most `server.max_streams` streams at once; one more is 503 `too_many_streams`
//!   naming the setting (`xcore_limit_refusals_total{limit="server.max_streams"}`);
//!   `xcore_stream_subscribers` is the number open;
//! - each stream reads from one shared ring of [`BUFFER`] events: a client that reads
//!   slower than events come loses the oldest ones, never grows a queue; it is told with a
//!   `lagged` event, and `xcore_stream_dropped_total` counts them;
//! - an event's `data` is at most [`MAX_DATA_BYTES`]: a larger payload or message is
//!   replaced by `{"truncated": true, "bytes": n}` (a message is cut at a char boundary).
//!
//! A comment line (`: keep-alive`) every [`KEEPALIVE`] keeps proxies from closing an idle
//! stream and lets the server notice a client that went away. Each stream checks its
//! token again every [`RECHECK`] (a revoked token's stream ends), and every stream ends
//! when the server stops ([`StreamHub::close`]), so none holds the graceful stop.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::body::rejected;
use super::problem::ApiError;
use super::{AppState, Role};

/// Streams open at once by default (`server.max_streams`).
pub const DEFAULT_MAX_STREAMS: usize = 32;
/// Events the shared ring holds: how far a stream may fall behind before it drops.
pub const BUFFER: usize = 256;
/// The largest `data` of one event, in bytes of JSON.
pub const MAX_DATA_BYTES: usize = 8 * 1024;
/// The interval of the keep-alive comment.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often an open stream checks its token again: a revoked token's stream ends
/// within this long (and the client's next attempt is 401).
pub const RECHECK: Duration = Duration::from_secs(15);
/// The owner of the hook interceptor, as `GET /api/v1/hooks` lists it.
pub const OWNER: &str = "xcore-api";

/// The events that are a plugin's state change.
const STATE_EVENTS: &[&str] = &[
    "plugin.loaded",
    "plugin.reloaded",
    "plugin.unloaded",
    "plugin.disabled",
    "plugin.enabled",
    "plugin.failed",
    "plugin.reload_failed",
];
/// The events the supervisor's restarts produce.
const RESTART_EVENTS: &[&str] = &["plugin.crashed", "plugin.restarted"];

/// The SSE event type of a hook event.
pub fn kind_of(event: &str) -> &'static str {
    if STATE_EVENTS.contains(&event) {
        "state"
    } else if RESTART_EVENTS.contains(&event) {
        "restart"
    } else {
        "emit"
    }
}

struct StreamMetrics {
    subscribers: IntGauge,
    max: IntGauge,
    dropped: IntCounter,
    published: IntCounterVec,
}

/// The fan-out of live events to the open streams.
pub struct StreamHub {
    tx: broadcast::Sender<Bytes>,
    /// Set when the server stops: every stream ends at once instead of holding the
    /// graceful stop for its whole timeout.
    closing: tokio::sync::watch::Sender<bool>,
    max_streams: usize,
    open: Arc<AtomicUsize>,
    seq: AtomicU64,
    metrics: StreamMetrics,
}

impl std::fmt::Debug for StreamHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHub")
            .field("max_streams", &self.max_streams)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish()
    }
}

impl StreamHub {
    /// A hub allowing `max_streams` streams at once (0 refuses every stream), each
    /// reading from a ring of `buffer` events (at least 1).
    pub fn new(max_streams: usize, buffer: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(buffer.max(1));
        let metrics = StreamMetrics {
            subscribers: IntGauge::new("xcore_stream_subscribers", "Event streams open (GET /api/v1/stream)")
                .expect("valid metric"),
            max: IntGauge::new(
                "xcore_stream_max_subscribers",
                "Event streams allowed at once (server.max_streams)",
            )
            .expect("valid metric"),
            dropped: IntCounter::new(
                "xcore_stream_dropped_total",
                "Events a slow stream client lost (its share of the ring was overwritten)",
            )
            .expect("valid metric"),
            published: IntCounterVec::new(
                Opts::new("xcore_stream_events_total", "Events published to the open streams, by SSE type"),
                &["kind"],
            )
            .expect("valid metric"),
        };
        metrics.max.set(max_streams as i64);
        let (closing, _) = tokio::sync::watch::channel(false);
        Arc::new(StreamHub {
            tx,
            closing,
            max_streams,
            open: Arc::default(),
            seq: AtomicU64::new(0),
            metrics,
        })
    }

    /// The hub's Prometheus collectors, for [`xcore_runtime::metrics::Metrics::register_collectors`].
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let m = &self.metrics;
        vec![
            Box::new(m.subscribers.clone()),
            Box::new(m.max.clone()),
            Box::new(m.dropped.clone()),
            Box::new(m.published.clone()),
        ]
    }

    /// Ends every open stream and refuses new ones (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The most streams allowed at once.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// Events dropped by slow streams so far.
    pub fn dropped(&self) -> u64 {
        self.metrics.dropped.get()
    }

    /// Sends one event of SSE type `kind` to every open stream; nothing is built when no
    /// stream is open. `fields` is an object; `seq` and `at` are added to it.
    pub fn publish(&self, kind: &'static str, fields: Value) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut data = match fields {
            Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        data.insert("seq".into(), json!(seq));
        data.insert(
            "at".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        let frame = frame(kind, &bounded(data));
        self.metrics.published.with_label_values(&[kind]).inc();
        // An error means every stream closed meanwhile: nobody to tell.
        let _ = self.tx.send(frame);
    }

    /// Observes every emit of `hooks` (a pre-interceptor on `**`, first of all, always
    /// continuing) and publishes it as a `state`, `restart` or `emit` event.
    pub fn observe(
        self: &Arc<Self>,
        hooks: &xcore_hooks::HookManager,
    ) -> Result<xcore_hooks::InterceptorId, xcore_hooks::HookError> {
        let hub = Arc::downgrade(self);
        let options = xcore_hooks::InterceptorOptions::named("api.stream").priority(i32::MIN).owner(OWNER);
        hooks.add_pre_interceptor("**", options, move |event, payload| {
            if let Some(hub) = hub.upgrade() {
                if hub.tx.receiver_count() > 0 {
                    hub.publish(kind_of(event), json!({ "event": event, "payload": payload }));
                }
            }
            xcore_hooks::PreAction::Continue
        })
    }

    /// Where the log appender hands the lines at `warn` and above, for `log` events.
    pub fn log_tap(self: &Arc<Self>) -> LogTap {
        LogTap { hub: Arc::downgrade(self) }
    }

    /// Opens a stream: 503 `too_many_streams` when `max_streams` are open.
    pub fn subscribe(self: &Arc<Self>) -> Result<Subscription, ApiError> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_streams).then_some(n + 1));
        if *self.closing.borrow() {
            if taken.is_ok() {
                self.open.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(ApiError::new(
                503,
                "shutting_down",
                "the host is stopping; its event stream is closed",
            ));
        }
        if taken.is_err() {
            let detail = if self.max_streams == 0 {
                "the event stream is off (server.max_streams is 0); poll the read routes, or raise \
                 server.max_streams in xcore.yaml"
                    .to_string()
            } else {
                format!(
                    "the host serves {} event streams already, the most server.max_streams allows; \
                     close one (a dashboard tab holds one), retry later, or raise server.max_streams in xcore.yaml",
                    self.max_streams
                )
            };
            let mut e = ApiError::new(503, "too_many_streams", detail);
            e.retry_after = Some(5);
            return Err(e);
        }
        self.metrics.subscribers.set(self.open_streams() as i64);
        Ok(Subscription {
            rx: self.tx.subscribe(),
            _slot: Slot { hub: self.clone() },
            recheck: None,
            checked: tokio::time::Instant::now(),
            closing: self.closing.subscribe(),
            hello: Some(frame(
                "hello",
                &json!({ "max_streams": self.max_streams, "buffer": BUFFER, "seq": self.seq.load(Ordering::Relaxed) }),
            )),
        })
    }
}

/// `event: KIND` + `data: JSON` + the blank line. JSON never holds a raw newline, so one
/// `data:` line is the whole event.
fn frame(kind: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {kind}\ndata: {json}\n\n"))
}

/// The event's fields with a `payload` or `message` over [`MAX_DATA_BYTES`] replaced.
fn bounded(mut data: serde_json::Map<String, Value>) -> Value {
    for key in ["payload", "message"] {
        let Some(v) = data.get(key) else { continue };
        let size = serde_json::to_string(v).map(|s| s.len()).unwrap_or(0);
        if size <= MAX_DATA_BYTES {
            continue;
        }
        let replaced = match v {
            Value::String(s) => {
                let mut cut = MAX_DATA_BYTES;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                Value::String(s[..cut].to_string())
            }
            _ => json!({ "truncated": true, "bytes": size }),
        };
        if replaced.is_string() {
            data.insert("truncated".into(), json!(true));
        }
        data.insert(key.into(), replaced);
    }
    Value::Object(data)
}

/// One place among the open streams, given back when the stream ends.
struct Slot {
    hub: Arc<StreamHub>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics.subscribers.set(self.hub.open_streams() as i64);
    }
}

/// An open stream: its place among the streams and its reader of the ring.
pub struct Subscription {
    rx: broadcast::Receiver<Bytes>,
    _slot: Slot,
    hello: Option<Bytes>,
    /// Whether the client may still watch (its token is still valid).
    recheck: Option<Box<dyn Fn() -> bool>>,
    checked: tokio::time::Instant,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Subscription {
    /// Ends the stream, at most [`RECHECK`] after `still_allowed` stops answering true.
    pub fn with_recheck(mut self, still_allowed: impl Fn() -> bool + 'static) -> Self {
        self.recheck = Some(Box::new(still_allowed));
        self
    }

    /// The next frame: an event, a `lagged` notice, or a keep-alive comment after
    /// [`KEEPALIVE`] of silence; `None` once the hub is gone or the recheck refused.
    pub async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(hello) = self.hello.take() {
            return Some(hello);
        }
        if self.checked.elapsed() >= RECHECK {
            self.checked = tokio::time::Instant::now();
            if self.recheck.as_ref().is_some_and(|allowed| !allowed()) {
                return None;
            }
        }
        if *self.closing.borrow() {
            return None;
        }
        let received = tokio::select! {
            r = tokio::time::timeout(KEEPALIVE, self.rx.recv()) => r,
            _ = self.closing.changed() => return None,
        };
        match received {
            Err(_) => Some(Bytes::from_static(b": keep-alive\n\n")),
            Ok(Ok(frame)) => Some(frame),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                self._slot.hub.metrics.dropped.inc_by(n);
                Some(frame("lagged", &json!({ "dropped": n })))
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => None,
        }
    }

    /// The frames as a response body.
    fn into_body(self) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
        futures_util::stream::unfold(self, |mut sub| async move {
            let frame = sub.next_frame().await?;
            Some((Ok(frame), sub))
        })
    }
}

/// `GET /api/v1/stream` (reader role).
pub(super) async fn get(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let metrics = state.registry.metrics();
    state.tokens.authorize(&req, Role::Reader).map_err(|e| rejected(metrics, e))?;
    let sub = state.stream.subscribe().inspect_err(|_| metrics.limit_refused("server.max_streams"))?;
    let (tokens, request) = (state.tokens.clone(), req.clone());
    let sub = sub.with_recheck(move || tokens.authorize(&request, Role::Reader).is_ok());
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store"))
        // Proxies that buffer (nginx) would hold the events back.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(sub.into_body()))
}

/// The log lines of [`StreamHub::log_tap`]: each line at `warn` or above becomes a `log`
/// event with its level, target, message and, when the thread works for one, the plugin.
/// The binary's log4rs appender hands lines to it (log4rs's `Append` returns
/// `anyhow::Result`, and `anyhow` stays in the binary).
#[derive(Clone)]
pub struct LogTap {
    hub: std::sync::Weak<StreamHub>,
}

impl std::fmt::Debug for LogTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogTap")
    }
}

impl LogTap {
    /// Whether a line of `level` would go anywhere: `warn` or above, and a stream open.
    /// Checked first, so that a line nobody watches costs no formatting.
    pub fn wanted(&self, level: log::Level) -> bool {
        level <= log::Level::Warn && self.hub.upgrade().is_some_and(|h| h.tx.receiver_count() > 0)
    }

    /// Publishes one log line (ignored below `warn`).
    pub fn line(&self, level: log::Level, target: &str, message: &str, plugin: Option<&str>) {
        if level > log::Level::Warn {
            return;
        }
        let Some(hub) = self.hub.upgrade() else { return };
        hub.publish(
            "log",
            json!({
                "level": level.as_str().to_lowercase(),
                "target": target,
                "message": message,
                "plugin": plugin,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn data(b: &Bytes) -> Value {
        let t = text(b);
        let line = t.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        serde_json::from_str(line).unwrap()
    }

    #[tokio::test]
    async fn streams_beyond_the_bound_are_refused_and_their_places_come_back() {
        let hub = StreamHub::new(2, 8);
        let a = hub.subscribe().unwrap();
        let _b = hub.subscribe().unwrap();
        let e = hub.subscribe().err().expect("a third stream is refused");
        assert_eq!((e.status.as_u16(), e.code.as_str()), (503, "too_many_streams"));
        assert!(e.detail.contains("server.max_streams") && e.detail.contains('2'), "{}", e.detail);
        assert_eq!(e.retry_after, Some(5));
        assert_eq!((hub.open_streams(), hub.metrics.subscribers.get()), (2, 2));
        drop(a);
        assert_eq!((hub.open_streams(), hub.metrics.subscribers.get()), (1, 1));
        hub.subscribe().expect("the place came back");
        let off = StreamHub::new(0, 8).subscribe().err().expect("0 refuses every stream");
        assert!(off.detail.contains("server.max_streams is 0"), "{}", off.detail);
    }

    #[tokio::test]
    async fn a_slow_stream_drops_the_oldest_events_and_is_told() {
        let hub = StreamHub::new(4, 4);
        let mut slow = hub.subscribe().unwrap();
        assert!(text(&slow.next_frame().await.unwrap()).starts_with("event: hello\n"));
        for i in 0..10 {
            hub.publish("emit", json!({ "event": "x", "payload": i }));
        }
        let lagged = slow.next_frame().await.unwrap();
        assert!(text(&lagged).starts_with("event: lagged\n"), "{}", text(&lagged));
        assert_eq!(data(&lagged)["dropped"], 6);
        assert_eq!(hub.dropped(), 6);
        // The four newest are still there, in order.
        for i in 6..10 {
            assert_eq!(data(&slow.next_frame().await.unwrap())["payload"], i);
        }
    }

    #[tokio::test]
    async fn hook_emits_reach_the_stream_by_kind_and_change_nothing() {
        let hub = StreamHub::new(4, 16);
        let hooks = xcore_hooks::HookManager::new();
        hub.observe(&hooks).unwrap();
        let mut s = hub.subscribe().unwrap();
        s.next_frame().await.unwrap();
        let report = hooks.emit("plugin.disabled", json!({ "plugin": "echo" })).await;
        assert!(report.cancelled.is_none() && !report.skipped && report.results.is_empty());
        hooks.emit("plugin.restarted", json!({ "plugin": "echo" })).await;
        hooks.emit("orders.created", json!({ "id": 7 })).await;
        let f = s.next_frame().await.unwrap();
        assert!(text(&f).starts_with("event: state\n"));
        assert_eq!(data(&f)["event"], "plugin.disabled");
        assert_eq!(data(&f)["payload"]["plugin"], "echo");
        assert!(text(&s.next_frame().await.unwrap()).starts_with("event: restart\n"));
        let e = s.next_frame().await.unwrap();
        assert!(text(&e).starts_with("event: emit\n"));
        assert_eq!(data(&e)["seq"], data(&f)["seq"].as_u64().unwrap() + 2);
        let listed = hooks.list_interceptors();
        assert_eq!((listed.len(), listed[0].owner.as_str(), listed[0].pattern.as_str()), (1, OWNER, "**"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_token_is_refused_ends_at_the_next_check() {
        let hub = StreamHub::new(1, 8);
        let allowed = std::rc::Rc::new(std::cell::Cell::new(true));
        let flag = allowed.clone();
        let mut s = hub.subscribe().unwrap().with_recheck(move || flag.get());
        s.next_frame().await.unwrap();
        tokio::time::advance(RECHECK).await;
        hub.publish("emit", json!({ "event": "a" }));
        assert!(text(&s.next_frame().await.unwrap()).starts_with("event: emit\n"), "still allowed");
        allowed.set(false);
        tokio::time::advance(RECHECK).await;
        hub.publish("emit", json!({ "event": "b" }));
        assert!(s.next_frame().await.is_none(), "the stream ends");
        drop(s);
        assert_eq!(hub.open_streams(), 0);
    }

    #[tokio::test]
    async fn closing_ends_every_stream_and_refuses_new_ones() {
        let hub = StreamHub::new(4, 8);
        let mut s = hub.subscribe().unwrap();
        s.next_frame().await.unwrap();
        let (ended, ()) = tokio::join!(async { s.next_frame().await.is_none() }, async {
            tokio::task::yield_now().await;
            hub.close();
        });
        assert!(ended, "the waiting stream ends");
        drop(s);
        let e = hub.subscribe().err().expect("no new stream while stopping");
        assert_eq!((e.status.as_u16(), e.code.as_str()), (503, "shutting_down"));
        assert_eq!(hub.open_streams(), 0);
    }

    #[test]
    fn large_payloads_and_messages_are_cut_to_the_bound() {
        let big = "é".repeat(MAX_DATA_BYTES);
        let mut m = serde_json::Map::new();
        m.insert("message".into(), json!(big));
        m.insert("payload".into(), json!({ "blob": big }));
        let v = bounded(m);
        assert!(v["message"].as_str().unwrap().len() <= MAX_DATA_BYTES);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["payload"]["truncated"], true);
        assert!(v["payload"]["bytes"].as_u64().unwrap() > MAX_DATA_BYTES as u64);
        let mut small = serde_json::Map::new();
        small.insert("payload".into(), json!({ "a": 1 }));
        assert_eq!(bounded(small), json!({ "payload": { "a": 1 } }));
    }

    #[tokio::test]
    async fn log_lines_below_warn_are_not_published() {
        let hub = StreamHub::new(1, 8);
        let tap = hub.log_tap();
        assert!(!tap.wanted(log::Level::Warn), "no stream open: nothing is wanted");
        let mut s = hub.subscribe().unwrap();
        assert!(tap.wanted(log::Level::Error) && tap.wanted(log::Level::Warn));
        assert!(!tap.wanted(log::Level::Info));
        tap.line(log::Level::Info, "xcore::x", "quiet", None);
        tap.line(log::Level::Warn, "xcore::x", "loud", Some("echo"));
        s.next_frame().await.unwrap();
        let f = s.next_frame().await.unwrap();
        assert!(text(&f).starts_with("event: log\n"));
        let d = data(&f);
        assert_eq!(
            (d["level"].as_str(), d["message"].as_str(), d["plugin"].as_str()),
            (Some("warn"), Some("loud"), Some("echo"))
        );
    }
}
