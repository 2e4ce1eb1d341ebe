//! `bookmarks`: an example of the persistence services.
//!
//! - The bookmarks live in SQL, in the table `bookmarks_items` that the plugin's own
//!   migrations create (`migrations/<backend>/`), queried with bound `?` parameters.
//! - Visit counts live in the durable key-value store (`visits:<id>`), counted with
//!   `kv_incr`, so concurrent visits are never lost.
//! - Lookups by id are cached (`bookmark:<id>`, 60 s), dropped on delete. Only hits are
//!   cached: a miss cached for a minute would answer 404 for a bookmark created since.
//! - Two adds of one URL racing each other: the table's UNIQUE constraint refuses the
//!   second insert, which is answered 409 `conflict`, like the add that saw it first.
//! - `list` pages (`after`, `limit`, at most [`MAX_PAGE`]) and says where the next page
//!   starts (`next_after`), rather than cutting a long list silently.
//! - A cron job (`bookmarks.summary`) stores a summary in the key-value store; it pages
//!   through every visit counter.
//!
//! Actions: `add` `{"url", "title"}`, `get` `{"id"}`, `visit` `{"id"}` (counts and
//! returns the bookmark), `list` `{"after"?, "limit"?}`, `delete` `{"id"}`, `summary`;
//! `kv.set` / `kv.get` `{"key", "value"?, "n"?}` repeat one key-value operation `n` times
//! (benchmarks).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use xcore_plugin_sdk::{export_plugin, Context, Plugin, PluginError, Reply, Request};

const DB: &str = "default";

/// The most bookmarks one `list` answers; `limit` defaults to [`DEFAULT_PAGE`].
const MAX_PAGE: u32 = 200;
const DEFAULT_PAGE: u32 = 50;

#[derive(Deserialize, Default)]
struct Page {
    /// Bookmarks with an id above this one.
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

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
    query: std::collections::BTreeMap<String, String>,
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
        let inserted = ctx.db_execute(
            DB,
            "INSERT INTO bookmarks_items (url, title, created_at) VALUES (?, ?, ?)",
            &[json!(new.url), json!(title), json!(now_ms())],
        );
        if let Err(e) = inserted {
            // Another add of the same URL won the race between the check above and this
            // insert: the UNIQUE constraint refused ours. Say so, as the check would have.
            return match self.by_url(ctx, &new.url)? {
                Some(b) => {
                    Err(PluginError::new("conflict", format!("'{}' is bookmark {} already", b.url, b.id))
                        .with_status(409))
                }
                None => Err(e),
            };
        }
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
        if let Some(hit) = ctx.cache_get::<Bookmark>(&key)? {
            return Ok(hit);
        }
        let rows: Vec<Bookmark> = ctx.db_query_as(
            DB,
            "SELECT id, url, title, created_at FROM bookmarks_items WHERE id = ?",
            &[json!(id)],
        )?;
        // Only a hit is cached: a bookmark added after a miss must be found at once.
        let found =
            rows.into_iter().next().ok_or_else(|| PluginError::not_found(format!("no bookmark {id}")))?;
        ctx.cache_set(&key, &found, Some(Duration::from_secs(60)))?;
        Ok(found)
    }

    fn visit(&self, ctx: &Context, id: i64) -> Result<Value, PluginError> {
        let bookmark = self.get(ctx, id)?;
        // One atomic increment: a read then a write would lose visits made meanwhile.
        let visits = ctx.kv_incr(&format!("visits:{id}"), 1)?;
        Ok(json!({ "bookmark": bookmark, "visits": visits }))
    }

    fn list(&self, ctx: &Context, page: Page) -> Result<Value, PluginError> {
        let limit = page.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(PluginError::invalid_payload(format!(
                "limit must be 1 to {MAX_PAGE}; it is {limit}"
            )));
        }
        // One row more than the page, to know whether there is a next one.
        let mut rows: Vec<Bookmark> = ctx.db_query_as(
            DB,
            "SELECT id, url, title, created_at FROM bookmarks_items WHERE id > ? ORDER BY id LIMIT ?",
            &[json!(page.after.unwrap_or(i64::MIN)), json!(limit + 1)],
        )?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let mut items = Vec::with_capacity(rows.len());
        for b in rows {
            let visits = ctx.kv_get::<u64>(&format!("visits:{}", b.id))?.unwrap_or(0);
            let mut item = serde_json::to_value(&b)?;
            item["visits"] = json!(visits);
            items.push(item);
        }
        let next_after = if more { items.last().map(|i| i["id"].clone()) } else { None };
        Ok(json!({ "count": items.len(), "bookmarks": items, "next_after": next_after }))
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
        // Every counter, page by page: a single kv_list stops at 1000 keys.
        let mut visits: u64 = 0;
        let mut after: Option<String> = None;
        loop {
            let page = ctx.kv_list("visits:", after.as_deref(), 1000)?;
            visits += page.iter().filter_map(|(_, v)| v.as_u64()).sum::<u64>();
            match page.last() {
                Some((key, _)) if page.len() == 1000 => after = Some(key.clone()),
                _ => break,
            }
        }
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
            "list" => {
                let page = if req.payload() == b"null" { Page::default() } else { req.json()? };
                Reply::json(&self.list(ctx, page)?)
            }
            "delete" => Reply::json(&self.delete(ctx, req.json::<ById>()?.id)?),
            "summary" => Reply::json(&self.summarize(ctx)?),
            "last_summary" => Reply::json(&ctx.kv_get::<Value>("summary")?),
            op @ ("kv.set" | "kv.get") => Reply::json(&self.kv_bench(ctx, op, req.json()?)?),
            "route.list" => {
                let call: RouteCall = req.json()?;
                let page = Page {
                    after: call.query.get("after").map(|a| a.parse()).transpose()?,
                    limit: call.query.get("limit").map(|l| l.parse()).transpose()?,
                };
                Reply::json(&self.list(ctx, page)?)
            }
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
