//! `notes`: a small stateful plugin, kept in memory, with HTTP routes.
//!
//! Actions called through `POST /api/v1/plugins/notes/call/{action}`:
//! - `create` `{"title": "...", "body": "..."}` -> the note with its `id`;
//! - `get` `{"id": 1}`, `delete` `{"id": 1}`, `list` (no payload).
//!
//! Routes declared in plugin.yaml (`GET /plugins/notes/notes/{id}`...) reach the
//! `#[route]` handlers, which read typed path parameters and bodies; the host checks at
//! load that every route of plugin.yaml names one of them.
//!
//! Creating a note emits `notes.created` with the note (the `echo` example subscribes
//! to it); the reply's `notified` counts the subscribers that handled it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use xcore_plugin_sdk::{export_plugin, plugin, Context, Json, Path, Plugin, PluginError};

/// A note.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Note {
    /// Its id, from 1.
    pub id: u64,
    /// Its title (never empty).
    pub title: String,
    /// Its text.
    pub body: String,
}

/// A note just created, and how many subscribers handled its `notes.created`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Created {
    /// The note.
    #[serde(flatten)]
    pub note: Note,
    /// Subscribers of `notes.created` that handled the event.
    pub notified: usize,
}

/// A note to create.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct NewNote {
    /// Its title (not empty).
    pub title: String,
    /// Its text.
    #[serde(default)]
    pub body: String,
}

/// A note's id.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ById {
    /// The id.
    pub id: u64,
}

/// The answer to a delete.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    /// The id of the note deleted.
    pub deleted: u64,
}

/// Every note.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Listing {
    /// How many.
    pub count: usize,
    /// The notes, by id.
    pub notes: Vec<Note>,
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

pub struct Notes {
    max_notes: usize,
    store: Mutex<Store>,
}

impl Notes {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-written note (every
        // mutation is one insert or remove), so a poisoned lock is safe to reuse.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, new: NewNote) -> Result<Note, PluginError> {
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

    fn find(&self, id: u64) -> Result<Note, PluginError> {
        self.store().notes.get(&id).cloned().ok_or_else(|| PluginError::not_found(format!("no note {id}")))
    }

    fn remove(&self, id: u64) -> Result<Deleted, PluginError> {
        match self.store().notes.remove(&id) {
            Some(_) => Ok(Deleted { deleted: id }),
            None => Err(PluginError::not_found(format!("no note {id}"))),
        }
    }

    fn listing(&self) -> Listing {
        let notes: Vec<Note> = self.store().notes.values().cloned().collect();
        Listing { count: notes.len(), notes }
    }

    /// Emits `notes.created` and waits for the subscribers (plugin.yaml grants
    /// `events.emit:notes.*`); the reply says how many handled it. The note is stored
    /// already, so an emit that fails is logged, not returned as the call's error.
    fn announce(&self, ctx: &Context, note: Note) -> Created {
        let notified = match ctx.emit("notes.created", &note) {
            Ok(report) => report.handled(),
            Err(e) => {
                ctx.warn(&format!("note {} stored, but notes.created was not emitted: {e}", note.id));
                0
            }
        };
        Created { note, notified }
    }
}

#[plugin]
impl Plugin for Notes {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        let cfg: Config = ctx.config_as()?;
        Ok(Notes { max_notes: cfg.max_notes, store: Mutex::new(Store::default()) })
    }

    /// Creates a note and announces it (`notes.created`).
    #[action]
    fn create(&self, ctx: &Context, Json(new): Json<NewNote>) -> Result<Json<Created>, PluginError> {
        let note = self.insert(new)?;
        ctx.info(&format!("created note {}", note.id));
        Ok(Json(self.announce(ctx, note)))
    }

    /// One note by id.
    #[action]
    fn get(&self, Json(by): Json<ById>) -> Result<Json<Note>, PluginError> {
        self.find(by.id).map(Json)
    }

    /// Deletes a note by id.
    #[action]
    fn delete(&self, Json(by): Json<ById>) -> Result<Json<Deleted>, PluginError> {
        self.remove(by.id).map(Json)
    }

    /// Every note.
    #[action(example(name = "no notes yet", input = "null", output = r#"{"count": 0, "notes": []}"#))]
    fn list(&self) -> Json<Listing> {
        Json(self.listing())
    }

    /// Every note.
    #[route(GET, "/notes", name = "route.list")]
    fn route_list(&self) -> Json<Listing> {
        Json(self.listing())
    }

    /// Creates a note from the request body and announces it.
    #[route(POST, "/notes", name = "route.create")]
    fn route_create(&self, ctx: &Context, Json(new): Json<NewNote>) -> Result<Json<Created>, PluginError> {
        let note = self.insert(new)?;
        Ok(Json(self.announce(ctx, note)))
    }

    /// One note by id.
    #[route(GET, "/notes/{id}", name = "route.get")]
    fn route_get(&self, Path(id): Path<u64>) -> Result<Json<Note>, PluginError> {
        self.find(id).map(Json)
    }

    /// Deletes a note by id.
    #[route(DELETE, "/notes/{id}", name = "route.delete")]
    fn route_delete(&self, Path(id): Path<u64>) -> Result<Json<Deleted>, PluginError> {
        self.remove(id).map(Json)
    }

    fn shutdown(&self, ctx: &Context) {
        ctx.info(&format!("shutting down with {} notes in memory", self.store().notes.len()));
    }
}

export_plugin!(Notes);
