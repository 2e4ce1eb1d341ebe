//! `bookmarks`: an example of the persistence services.
//!
//! - The bookmarks live in SQL, in the table `bookmarks_items` that the plugin's own
//!   migrations create (`migrations/<backend>/`), queried with bound `?` parameters.
//! - Visit counts live in the durable key-value store (`visits:<id>`).
//! - Lookups by id are cached (`bookmark:<id>`, 60 s), dropped on delete.
//! - A cron job (`bookmarks.summary`) stores a summary in the key-value store.
//!
//! Actions: `add` `{"url", "title"}`, `get` `{"id"}`, `visit` `{"id"}` (counts and
//! returns the bookmark), `list`, `delete` `{"id"}`, `summary`; `kv.set` / `kv.get`
//! `{"key", "value"?, "n"?}` repeat one key-value operation `n` times (benchmarks).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use xcore_plugin_api::{export_plugin, Context, Plugin, PluginError, Reply, Request};

const DB: &str = "default";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bookmark {
    id: i64,
    url: String,
    title: String,
    created_at: i64,
}

#[derive(Deserialize)]
struct NewBookmark {
    url: String,
    #[serde(default)]
    title: String,
}

#[derive(Deserialize)]
struct ById {
    id: i64,
}

#[derive(Deserialize)]
struct KvOp {
    key: String,
    #[serde(default)]
    value: Value,
    #[serde(default = "one")]
    n: u32,
}

fn one() -> u32 {
    1
}

/// What the host sends for a declared route.
#[derive(Deserialize)]
struct RouteCall {
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: Value,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_cron")]
    summary_cron: String,
}

fn default_cron() -> String {
    "0 * * * * *".into()
}

struct Bookmarks;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Bookmarks {
    fn add(&self, ctx: &Context, new: NewBookmark) -> Result<Bookmark, PluginError> {
        if !(new.url.starts_with("http://") || new.url.starts_with("https://")) {
            return Err(PluginError::invalid_payload(format!("'{}' is not an http(s) URL", new.url)));
        }
        let title = if new.title.trim().is_empty() { new.url.clone() } else { new.title };
        let found = self.by_url(ctx, &new.url)?;
        if let Some(b) = found {
            return Err(PluginError::new("conflict", format!("'{}' is bookmark {} already", b.url, b.id))
                .with_status(409));
        }
        ctx.db_execute(
            DB,
            "INSERT INTO bookmarks_items (url, title, created_at) VALUES (?, ?, ?)",
            &[json!(new.url), json!(title), json!(now_ms())],
        )?;
        self.by_url(ctx, &new.url)?.ok_or_else(|| PluginError::internal("the new bookmark vanished"))
    }

    fn by_url(&self, ctx: &Context, url: &str) -> Result<Option<Bookmark>, PluginError> {
        let rows: Vec<Bookmark> = ctx.db_query_as(
            DB,
            "SELECT id, url, title, created_at FROM bookmarks_items WHERE url = ?",
            &[json!(url)],
        )?;
        Ok(rows.into_iter().next())
    }

    fn get(&self, ctx: &Context, id: i64) -> Result<Bookmark, PluginError> {
        let key = format!("bookmark:{id}");
        let found: Option<Bookmark> = ctx.cache_get_or_set(&key, Some(Duration::from_secs(60)), || {
            let rows: Vec<Bookmark> = ctx.db_query_as(
                DB,
                "SELECT id, url, title, created_at FROM bookmarks_items WHERE id = ?",
                &[json!(id)],
            )?;
            Ok(rows.into_iter().next())
        })?;
        found.ok_or_else(|| PluginError::not_found(format!("no bookmark {id}")))
    }

    fn visit(&self, ctx: &Context, id: i64) -> Result<Value, PluginError> {
        let bookmark = self.get(ctx, id)?;
        let key = format!("visits:{id}");
        let visits = ctx.kv_get::<u64>(&key)?.unwrap_or(0) + 1;
        ctx.kv_set(&key, &visits, None)?;
        Ok(json!({ "bookmark": bookmark, "visits": visits }))
    }

    fn list(&self, ctx: &Context) -> Result<Value, PluginError> {
        let rows =
            ctx.db_query(DB, "SELECT id, url, title, created_at FROM bookmarks_items ORDER BY id", &[])?;
        let visits: std::collections::BTreeMap<String, Value> =
            ctx.kv_list("visits:", None, 1000)?.into_iter().collect();
        let items: Vec<Value> = rows
            .into_iter()
            .map(|mut row| {
                let id = row.get("id").cloned().unwrap_or(Value::Null);
                let n = visits.get(&format!("visits:{id}")).cloned().unwrap_or(json!(0));
                row.insert("visits".into(), n);
                Value::Object(row)
            })
            .collect();
        Ok(json!({ "count": items.len(), "bookmarks": items }))
    }

    fn delete(&self, ctx: &Context, id: i64) -> Result<Value, PluginError> {
        let n = ctx.db_execute(DB, "DELETE FROM bookmarks_items WHERE id = ?", &[json!(id)])?;
        if n == 0 {
            return Err(PluginError::not_found(format!("no bookmark {id}")));
        }
        ctx.cache_delete(&format!("bookmark:{id}"))?;
        ctx.kv_delete(&format!("visits:{id}"))?;
        Ok(json!({ "deleted": id }))
    }

    /// The cron job: counts bookmarks and visits, keeps the result under `summary`.
    fn summarize(&self, ctx: &Context) -> Result<Value, PluginError> {
        let rows = ctx.db_query(DB, "SELECT COUNT(*) AS n FROM bookmarks_items", &[])?;
        let count = rows.first().and_then(|r| r.get("n")).and_then(Value::as_i64).unwrap_or(0);
        let visits: u64 = ctx.kv_list("visits:", None, 1000)?.iter().filter_map(|(_, v)| v.as_u64()).sum();
        let summary = json!({ "bookmarks": count, "visits": visits, "at": now_ms() });
        ctx.kv_set("summary", &summary, None)?;
        Ok(summary)
    }

    fn kv_bench(&self, ctx: &Context, op: &str, req: KvOp) -> Result<Value, PluginError> {
        let mut last = Value::Null;
        for _ in 0..req.n {
            match op {
                "kv.set" => ctx.kv_set(&req.key, &req.value, None)?,
                _ => last = ctx.kv_get::<Value>(&req.key)?.unwrap_or(Value::Null),
            }
        }
        Ok(json!({ "n": req.n, "value": last }))
    }
}

fn route_id(call: &RouteCall) -> Result<i64, PluginError> {
    let raw = call.params.get("id").ok_or_else(|| PluginError::invalid_payload("missing {id}"))?;
    raw.parse().map_err(|_| PluginError::invalid_payload(format!("bookmark id '{raw}' is not a number")))
}

impl Plugin for Bookmarks {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        let cfg: Config = ctx.config_as()?;
        ctx.schedule("summary", &cfg.summary_cron, "summary", &json!({}))?;
        Ok(Bookmarks)
    }

    fn call(&self, ctx: &Context, req: Request<'_>) -> Result<Reply, PluginError> {
        match req.action() {
            "add" => Reply::json(&self.add(ctx, req.json()?)?),
            "get" => Reply::json(&self.get(ctx, req.json::<ById>()?.id)?),
            "visit" => Reply::json(&self.visit(ctx, req.json::<ById>()?.id)?),
            "list" => Reply::json(&self.list(ctx)?),
            "delete" => Reply::json(&self.delete(ctx, req.json::<ById>()?.id)?),
            "summary" => Reply::json(&self.summarize(ctx)?),
            "last_summary" => Reply::json(&ctx.kv_get::<Value>("summary")?),
            op @ ("kv.set" | "kv.get") => Reply::json(&self.kv_bench(ctx, op, req.json()?)?),
            "route.list" => Reply::json(&self.list(ctx)?),
            "route.add" => {
                let call: RouteCall = req.json()?;
                let new: NewBookmark = serde_json::from_value(call.body)
                    .map_err(|e| PluginError::invalid_payload(format!("body: {e}")))?;
                Reply::json(&self.add(ctx, new)?)
            }
            "route.visit" => Reply::json(&self.visit(ctx, route_id(&req.json()?)?)?),
            other => Err(PluginError::unknown_action(other)),
        }
    }
}

export_plugin!(Bookmarks);
