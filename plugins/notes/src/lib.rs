//! `notes`: a small stateful plugin, kept in memory, with HTTP routes.
//!
//! Actions called through `POST /api/v1/plugins/notes/call/{action}`:
//! - `create` `{"title": "...", "body": "..."}` -> the note with its `id`;
//! - `get` `{"id": 1}`, `delete` `{"id": 1}`, `list` (no payload).
//!
//! Routes declared in plugin.yaml map REST calls to `route.*` actions, which receive
//! `{"params": {...}, "query": {...}, "body": ...}` from the host and delegate.
//!
//! Creating a note emits `notes.created` with the note (the `echo` example subscribes
//! to it); the reply's `notified` counts the subscribers that handled it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use xcore_plugin_sdk::{export_plugin, Context, Plugin, PluginError, Reply, Request};

#[derive(Debug, Clone, Serialize)]
struct Note {
    id: u64,
    title: String,
    body: String,
}

#[derive(Debug, Deserialize)]
struct NewNote {
    title: String,
    #[serde(default)]
    body: String,
}

#[derive(Debug, Deserialize)]
struct ById {
    id: u64,
}

/// What the host sends for a declared route.
#[derive(Debug, Deserialize)]
struct RouteCall {
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    body: Value,
}

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default = "default_max")]
    max_notes: usize,
}

fn default_max() -> usize {
    1000
}

#[derive(Default)]
struct Store {
    next_id: u64,
    notes: BTreeMap<u64, Note>,
}

struct Notes {
    max_notes: usize,
    store: Mutex<Store>,
}

impl Notes {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-written note (every
        // mutation is one insert or remove), so a poisoned lock is safe to reuse.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn create(&self, new: NewNote) -> Result<Note, PluginError> {
        if new.title.trim().is_empty() {
            return Err(PluginError::invalid_payload("a note needs a non-empty title"));
        }
        let mut s = self.store();
        if s.notes.len() >= self.max_notes {
            return Err(
                PluginError::new("full", format!("at most {} notes", self.max_notes)).with_status(409)
            );
        }
        s.next_id += 1;
        let note = Note { id: s.next_id, title: new.title, body: new.body };
        s.notes.insert(note.id, note.clone());
        Ok(note)
    }

    fn get(&self, id: u64) -> Result<Note, PluginError> {
        self.store().notes.get(&id).cloned().ok_or_else(|| PluginError::not_found(format!("no note {id}")))
    }

    fn delete(&self, id: u64) -> Result<Value, PluginError> {
        match self.store().notes.remove(&id) {
            Some(_) => Ok(json!({ "deleted": id })),
            None => Err(PluginError::not_found(format!("no note {id}"))),
        }
    }

    fn list(&self) -> Value {
        let notes: Vec<Note> = self.store().notes.values().cloned().collect();
        json!({ "count": notes.len(), "notes": notes })
    }
}

impl Notes {
    /// Emits `notes.created` and waits for the subscribers (plugin.yaml grants
    /// `events.emit:notes.*`); the reply says how many handled it. The note is stored
    /// already, so an emit that fails is logged, not returned as the call's error.
    fn announce(&self, ctx: &Context, note: Note) -> Result<Value, PluginError> {
        let handled = match ctx.emit("notes.created", &note) {
            Ok(report) => report.handled(),
            Err(e) => {
                ctx.warn(&format!("note {} stored, but notes.created was not emitted: {e}", note.id));
                0
            }
        };
        let mut reply = serde_json::to_value(&note).map_err(|e| PluginError::internal(e.to_string()))?;
        reply["notified"] = json!(handled);
        Ok(reply)
    }
}

fn param_id(call: &RouteCall) -> Result<u64, PluginError> {
    let raw = call.params.get("id").ok_or_else(|| PluginError::invalid_payload("missing {id}"))?;
    raw.parse().map_err(|_| PluginError::invalid_payload(format!("note id '{raw}' is not a number")))
}

impl Plugin for Notes {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        let cfg: Config = ctx.config_as()?;
        Ok(Notes { max_notes: cfg.max_notes, store: Mutex::new(Store::default()) })
    }

    fn call(&self, ctx: &Context, req: Request<'_>) -> Result<Reply, PluginError> {
        match req.action() {
            "create" => {
                let note = self.create(req.json()?)?;
                ctx.info(&format!("created note {}", note.id));
                Reply::json(&self.announce(ctx, note)?)
            }
            "get" => Reply::json(&self.get(req.json::<ById>()?.id)?),
            "delete" => Reply::json(&self.delete(req.json::<ById>()?.id)?),
            "list" => Reply::json(&self.list()),
            "route.list" => Reply::json(&self.list()),
            "route.create" => {
                let call: RouteCall = req.json()?;
                let new: NewNote = serde_json::from_value(call.body)
                    .map_err(|e| PluginError::invalid_payload(format!("body: {e}")))?;
                let note = self.create(new)?;
                Reply::json(&self.announce(ctx, note)?)
            }
            "route.get" => Reply::json(&self.get(param_id(&req.json()?)?)?),
            "route.delete" => Reply::json(&self.delete(param_id(&req.json()?)?)?),
            other => Err(PluginError::unknown_action(other)),
        }
    }

    fn shutdown(&self, ctx: &Context) {
        ctx.info(&format!("shutting down with {} notes in memory", self.store().notes.len()));
    }
}

export_plugin!(Notes);
