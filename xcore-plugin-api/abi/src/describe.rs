//! What a plugin says about itself: the JSON it answers to the reserved action
//! [`DESCRIBE_ACTION`].
//!
//! The SDK answers it (with the `#[plugin]` table when the plugin has one); the host asks
//! once per instance, right after the constructor, to check the manifest against the
//! plugin's actions, to subscribe its `#[on]` handlers, and to put each action's schemas
//! in the OpenAPI document. Every field is optional on the wire, so that either side may
//! be newer.
//!
//! Why a reserved action and not a new root-module field: abi_stable accepts a library
//! whose prefix type has *more* fields than the host's, never fewer, so a field appended
//! for this would have made every plugin built on 0.1.0 unloadable (the `legacy_abi`
//! fixture proved it: "too many fields, expected 3, found 2"). A call goes through the
//! vtable every plugin already has; a plugin built before answers `unknown_action`, which
//! the host reads as "no description".

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The action the host calls to read a plugin's [`PluginDescription`]. Names starting
/// with [`RESERVED_PREFIX`] belong to the host: a manifest cannot route to them and no
/// client can call them.
pub const DESCRIBE_ACTION: &str = "__xcore_describe";

/// The prefix of action names reserved for the host.
pub const RESERVED_PREFIX: &str = "__xcore";

/// A plugin's description.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginDescription {
    /// The version of the SDK the plugin was built with.
    pub sdk_version: String,
    /// The plugin's actions, or `None` when the plugin dispatches by hand (a `call` of its
    /// own): then the host cannot check names and trusts the manifest.
    pub actions: Option<Vec<ActionDescription>>,
}

/// One action of a plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionDescription {
    /// The action's name, as the manifest's `routes` and `hooks` and the admin call name it.
    pub name: String,
    /// The first line of the handler's doc comment.
    pub summary: Option<String>,
    /// The rest of the doc comment.
    pub description: Option<String>,
    /// How the payload reaches it.
    pub kind: ActionKind,
    /// The routes the code declares for it (`#[route(GET, "/notes/{id}")]`).
    pub routes: Vec<RouteDescription>,
    /// The event patterns it handles (`#[on("notes.created")]`).
    pub events: Vec<String>,
    /// The JSON Schema of its input: the payload for an action, the body for a route, the
    /// event's payload for a handler. `None` when it takes none.
    pub input_schema: Option<Value>,
    /// The JSON Schema of the path parameters of a route.
    pub params_schema: Option<Value>,
    /// The JSON Schema of the query of a route.
    pub query_schema: Option<Value>,
    /// The JSON Schema of its reply. `None` when the reply is untyped.
    pub output_schema: Option<Value>,
    /// Examples: an input and the reply it must give. A test kit runs them as tests.
    pub examples: Vec<Example>,
}

/// How an action receives its payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Called with a JSON payload (admin call, another plugin, a job).
    #[default]
    Action,
    /// Served on an HTTP route: the payload is `{"params", "query", "body"}`.
    Route,
    /// An event handler: the payload is `{"event", "payload"}`.
    Event,
}

/// A route a handler declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteDescription {
    /// The HTTP method, upper case.
    pub method: String,
    /// The path under the plugin's prefix, with `{name}` parameters.
    pub path: String,
}

/// An example of an action: this input gives this reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Example {
    /// What the example shows.
    pub name: String,
    /// The payload (for a route: the `{"params", "query", "body"}` the host would send).
    pub input: Value,
    /// The reply it must give.
    pub output: Value,
}

impl PluginDescription {
    /// The action named `name`, when the plugin has a table and the action is in it.
    pub fn action(&self, name: &str) -> Option<&ActionDescription> {
        self.actions.as_ref()?.iter().find(|a| a.name == name)
    }
}
