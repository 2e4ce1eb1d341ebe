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

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use xcore_plugin_sdk::{export_plugin, plugin, Context, Json, Path, Plugin, PluginError, Query};

const DB: &str = "default";

/// The most bookmarks one `list` answers; `limit` defaults to [`DEFAULT_PAGE`].
const MAX_PAGE: u32 = 200;
const DEFAULT_PAGE: u32 = 50;

/// Which page of the list.
#[derive(Deserialize, Default, JsonSchema)]
pub struct Page {
    /// Bookmarks with an id above this one (the previous page's `next_after`).
    #[serde(default)]
    pub after: Option<i64>,
    /// How many, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A bookmark.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Bookmark {
    /// Its id.
    pub id: i64,
    /// The http(s) URL.
    pub url: String,
    /// Its title (the URL when none was given).
    pub title: String,
    /// When it was added, in ms since the Unix epoch.
    pub created_at: i64,
}

/// A bookmark to add.
#[derive(Deserialize, JsonSchema)]
pub struct NewBookmark {
    /// An http(s) URL.
    pub url: String,
    /// Its title.
    #[serde(default)]
    pub title: String,
}

/// A bookmark's id.
#[derive(Deserialize, JsonSchema)]
pub struct ById {
    /// The id.
    pub id: i64,
}

/// A bookmark and its visits.
#[derive(Serialize, JsonSchema)]
pub struct Visited {
    /// The bookmark.
    pub bookmark: Bookmark,
    /// Visits so far, this one included.
    pub visits: u64,
}

/// A bookmark in a list, with its visits.
#[derive(Serialize, JsonSchema)]
pub struct Listed {
    /// The bookmark.
    #[serde(flatten)]
    pub bookmark: Bookmark,
    /// Its visits.
    pub visits: u64,
}

/// One page of bookmarks.
#[derive(Serialize, JsonSchema)]
pub struct Listing {
    /// How many on this page.
    pub count: usize,
    /// The bookmarks, by id.
    pub bookmarks: Vec<Listed>,
    /// Where the next page starts (`after`), or null on the last page.
    pub next_after: Option<i64>,
}

/// The answer to a delete.
#[derive(Serialize, JsonSchema)]
pub struct Deleted {
    /// The id of the bookmark deleted.
    pub deleted: i64,
}

/// A key-value operation repeated `n` times (benchmarks).
#[derive(Deserialize, JsonSchema)]
pub struct KvOp {
    /// The key.
    pub key: String,
    /// The value to set.
    #[serde(default)]
    pub value: Value,
    /// How many times (default 1).
    #[serde(default = "one")]
    pub n: u32,
}

fn one() -> u32 {
    1
}

/// What a key-value benchmark did.
#[derive(Serialize, JsonSchema)]
pub struct KvDone {
    /// How many operations.
    pub n: u32,
    /// The last value read (null for sets).
    pub value: Value,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_cron")]
    summary_cron: String,
}

fn default_cron() -> String {
    "0 * * * * *".into()
}

pub struct Bookmarks;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Bookmarks {
    fn insert(&self, ctx: &Context, new: NewBookmark) -> Result<Bookmark, PluginError> {
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

    fn find(&self, ctx: &Context, id: i64) -> Result<Bookmark, PluginError> {
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

    fn count_visit(&self, ctx: &Context, id: i64) -> Result<Visited, PluginError> {
        let bookmark = self.find(ctx, id)?;
        // One atomic increment: a read then a write would lose visits made meanwhile.
        let visits = ctx.kv_incr(&format!("visits:{id}"), 1)?;
        Ok(Visited { bookmark, visits: u64::try_from(visits).unwrap_or(0) })
    }

    fn page(&self, ctx: &Context, page: Page) -> Result<Listing, PluginError> {
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
        for bookmark in rows {
            let visits = ctx.kv_get::<u64>(&format!("visits:{}", bookmark.id))?.unwrap_or(0);
            items.push(Listed { bookmark, visits });
        }
        let next_after = if more { items.last().map(|i| i.bookmark.id) } else { None };
        Ok(Listing { count: items.len(), bookmarks: items, next_after })
    }

    fn remove(&self, ctx: &Context, id: i64) -> Result<Deleted, PluginError> {
        let n = ctx.db_execute(DB, "DELETE FROM bookmarks_items WHERE id = ?", &[json!(id)])?;
        if n == 0 {
            return Err(PluginError::not_found(format!("no bookmark {id}")));
        }
        ctx.cache_delete(&format!("bookmark:{id}"))?;
        ctx.kv_delete(&format!("visits:{id}"))?;
        Ok(Deleted { deleted: id })
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

    fn kv_bench(&self, ctx: &Context, set: bool, req: KvOp) -> Result<KvDone, PluginError> {
        let mut last = Value::Null;
        for _ in 0..req.n {
            if set {
                ctx.kv_set(&req.key, &req.value, None)?;
            } else {
                last = ctx.kv_get::<Value>(&req.key)?.unwrap_or(Value::Null);
            }
        }
        Ok(KvDone { n: req.n, value: last })
    }
}

#[plugin]
impl Plugin for Bookmarks {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        let cfg: Config = ctx.config_as()?;
        ctx.schedule("summary", &cfg.summary_cron, "summary", &json!({}))?;
        Ok(Bookmarks)
    }

    /// Adds a bookmark; 409 `conflict` when the URL is bookmarked already.
    #[action]
    fn add(&self, ctx: &Context, Json(new): Json<NewBookmark>) -> Result<Json<Bookmark>, PluginError> {
        self.insert(ctx, new).map(Json)
    }

    /// One bookmark by id (cached for 60 s).
    #[action]
    fn get(&self, ctx: &Context, Json(by): Json<ById>) -> Result<Json<Bookmark>, PluginError> {
        self.find(ctx, by.id).map(Json)
    }

    /// Counts a visit and answers the bookmark with its visits.
    #[action]
    fn visit(&self, ctx: &Context, Json(by): Json<ById>) -> Result<Json<Visited>, PluginError> {
        self.count_visit(ctx, by.id).map(Json)
    }

    /// One page of bookmarks (`null` for the first page of 50).
    #[action]
    fn list(&self, ctx: &Context, Json(page): Json<Option<Page>>) -> Result<Json<Listing>, PluginError> {
        self.page(ctx, page.unwrap_or_default()).map(Json)
    }

    /// Deletes a bookmark, its cached copy and its visits.
    #[action]
    fn delete(&self, ctx: &Context, Json(by): Json<ById>) -> Result<Json<Deleted>, PluginError> {
        self.remove(ctx, by.id).map(Json)
    }

    /// The cron job: counts bookmarks and visits, keeps the result under `summary`.
    #[action]
    fn summary(&self, ctx: &Context) -> Result<Value, PluginError> {
        self.summarize(ctx)
    }

    /// The summary the job kept last (null before its first run).
    #[action]
    fn last_summary(&self, ctx: &Context) -> Result<Json<Option<Value>>, PluginError> {
        ctx.kv_get::<Value>("summary").map(Json)
    }

    /// Sets one key `n` times (benchmarks).
    #[action(name = "kv.set")]
    fn kv_set(&self, ctx: &Context, Json(op): Json<KvOp>) -> Result<Json<KvDone>, PluginError> {
        self.kv_bench(ctx, true, op).map(Json)
    }

    /// Reads one key `n` times (benchmarks).
    #[action(name = "kv.get")]
    fn kv_get(&self, ctx: &Context, Json(op): Json<KvOp>) -> Result<Json<KvDone>, PluginError> {
        self.kv_bench(ctx, false, op).map(Json)
    }

    /// One page of bookmarks: `?after=&limit=`.
    #[route(GET, "/bookmarks", name = "route.list")]
    fn route_list(&self, ctx: &Context, Query(page): Query<Page>) -> Result<Json<Listing>, PluginError> {
        self.page(ctx, page).map(Json)
    }

    /// Adds a bookmark from the request body.
    #[route(POST, "/bookmarks", name = "route.add")]
    fn route_add(&self, ctx: &Context, Json(new): Json<NewBookmark>) -> Result<Json<Bookmark>, PluginError> {
        self.insert(ctx, new).map(Json)
    }

    /// Counts a visit of a bookmark and answers it with its visits.
    #[route(GET, "/bookmarks/{id}", name = "route.visit")]
    fn route_visit(&self, ctx: &Context, Path(id): Path<i64>) -> Result<Json<Visited>, PluginError> {
        self.count_visit(ctx, id).map(Json)
    }
}

export_plugin!(Bookmarks);
