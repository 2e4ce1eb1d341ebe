//! Typed handlers: what [`plugin`](crate::plugin) builds on.
//!
//! A handler's arguments after `&self` are extractors ([`FromCall`]): [`Json`] (the
//! input), [`Path`] and [`Query`] (a route's parameters), [`Event`](crate::Event) (an
//! event with its payload), plus `&Context` and `Request` as they are. Its result is
//! anything [`IntoReply`]: [`Json`], [`Reply`], `()` or a `serde_json::Value`, bare or in
//! a `Result` whose error converts into [`PluginError`]. Each extractor and reply also
//! describes itself: its JSON Schema (schemars) goes into the action table the host reads.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::describe::{ActionDescription, ActionKind, Example};
use crate::sdk::{Context, Event, PluginError, Reply, Request};

/// The input of a handler, as `T`: the payload of an `#[action]`, the body of a
/// `#[route]`, the event's payload in an `#[on]` handler. As a result, the reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// A route's path parameters: a struct whose fields are the `{names}` of the path, or,
/// for a path with a single parameter, that parameter's type (`Path<u64>`). Values are
/// parsed from text like a query string (numbers, booleans, strings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Path<T>(pub T);

/// A route's query string, as a struct of its parameters (missing ones need
/// `#[serde(default)]` or an `Option`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query<T>(pub T);

/// JSON Schemas of handler inputs and outputs, each one self-contained (subschemas
/// inlined, so that it can be embedded in an OpenAPI document as it is).
pub struct Schemas {
    settings: SchemaSettings,
}

impl Schemas {
    /// The generator settings of the action table.
    pub fn new() -> Self {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        });
        Schemas { settings }
    }

    /// The schema of `T`.
    pub fn of<T: JsonSchema>(&mut self) -> Value {
        self.settings.clone().into_generator().into_root_schema_for::<T>().to_value()
    }
}

impl Default for Schemas {
    fn default() -> Self {
        Self::new()
    }
}

/// An argument the handler gets from the call.
pub trait FromCall: Sized {
    /// Extracts it; a mismatch is an `invalid_payload` error (400) that says what.
    fn from_call(ctx: &Context, req: &Request<'_>, kind: ActionKind) -> Result<Self, PluginError>;

    /// Adds what it knows (its schema) to the action's description.
    fn describe(description: &mut ActionDescription, schemas: &mut Schemas) {
        let _ = (description, schemas);
    }
}

/// A handler's result, turned into the reply.
pub trait IntoReply {
    /// The reply bytes.
    fn into_reply(self) -> Result<Reply, PluginError>;

    /// Adds the reply's schema to the action's description.
    fn describe(description: &mut ActionDescription, schemas: &mut Schemas) {
        let _ = (description, schemas);
    }
}

/// What the host sends a route: `{"params", "query", "body"}`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    body: Value,
}

/// What the host sends an event handler: `{"event", "payload"}`.
#[derive(Deserialize)]
struct Delivery {
    #[serde(default)]
    payload: Value,
}

fn envelope(req: &Request<'_>) -> Result<Envelope, PluginError> {
    serde_json::from_slice(req.payload()).map_err(|e| {
        PluginError::invalid_payload(format!(
            "action '{}' is a route handler: the payload must be {{params, query, body}}: {e}",
            req.action()
        ))
    })
}

impl<T: DeserializeOwned + JsonSchema> FromCall for Json<T> {
    fn from_call(_ctx: &Context, req: &Request<'_>, kind: ActionKind) -> Result<Self, PluginError> {
        let invalid = |what: &str, e: serde_json::Error| {
            PluginError::invalid_payload(format!("action '{}': {what}: {e}", req.action()))
        };
        match kind {
            ActionKind::Route => {
                let body = envelope(req)?.body;
                serde_json::from_value(body).map(Json).map_err(|e| invalid("body", e))
            }
            ActionKind::Event => {
                let delivery: Delivery = req.json()?;
                serde_json::from_value(delivery.payload).map(Json).map_err(|e| invalid("event payload", e))
            }
            _ => req.json().map(Json),
        }
    }

    fn describe(description: &mut ActionDescription, schemas: &mut Schemas) {
        description.input_schema = Some(schemas.of::<T>());
    }
}

/// Parses a map of text values (path parameters, a query) into `T`, as a query string is.
fn from_text_map<T: DeserializeOwned>(map: &BTreeMap<String, String>) -> Result<T, String> {
    let encoded = serde_urlencoded::to_string(map).map_err(|e| e.to_string())?;
    serde_urlencoded::from_str(&encoded).map_err(|e| e.to_string())
}

impl<T: DeserializeOwned + JsonSchema> FromCall for Path<T> {
    fn from_call(_ctx: &Context, req: &Request<'_>, kind: ActionKind) -> Result<Self, PluginError> {
        if kind != ActionKind::Route {
            return Err(PluginError::internal(format!(
                "action '{}': Path<_> reads a route's parameters; use it in a #[route] handler",
                req.action()
            )));
        }
        let params = envelope(req)?.params;
        let whole = from_text_map::<T>(&params);
        let value = match (whole, params.len()) {
            (Ok(v), _) => v,
            // A single parameter read as a value of its own (`Path<u64>`).
            (Err(_), 1) => {
                #[derive(Deserialize)]
                struct One<V> {
                    v: V,
                }
                let only = params.values().next().cloned().unwrap_or_default();
                let one = BTreeMap::from([("v".to_string(), only.clone())]);
                from_text_map::<One<T>>(&one).map(|o| o.v).map_err(|e| {
                    PluginError::invalid_payload(format!(
                        "action '{}': path parameter '{only}': {e}",
                        req.action()
                    ))
                })?
            }
            (Err(e), _) => {
                return Err(PluginError::invalid_payload(format!(
                    "action '{}': path parameters {params:?}: {e}",
                    req.action()
                )))
            }
        };
        Ok(Path(value))
    }

    fn describe(description: &mut ActionDescription, schemas: &mut Schemas) {
        description.params_schema = Some(schemas.of::<T>());
    }
}

impl<T: DeserializeOwned + JsonSchema> FromCall for Query<T> {
    fn from_call(_ctx: &Context, req: &Request<'_>, kind: ActionKind) -> Result<Self, PluginError> {
        if kind != ActionKind::Route {
            return Err(PluginError::internal(format!(
                "action '{}': Query<_> reads a route's query string; use it in a #[route] handler",
                req.action()
            )));
        }
        let query = envelope(req)?.query;
        from_text_map(&query).map(Query).map_err(|e| {
            PluginError::invalid_payload(format!("action '{}': query {query:?}: {e}", req.action()))
        })
    }

    fn describe(description: &mut ActionDescription, schemas: &mut Schemas) {
        description.query_schema = Some(schemas.of::<T>());
    }
}

impl<T: DeserializeOwned + JsonSchema> FromCall for Event<T> {
    fn from_call(_ctx: &Context, req: &Request<'_>, _kind: ActionKind) -> Result<Self, PluginError> {
        req.event()
    }

    fn describe(description: &mut ActionDescription, schemas: &mut Schemas) {
        description.input_schema = Some(schemas.of::<T>());
    }
}

impl<T: Serialize + JsonSchema> IntoReply for Json<T> {
    fn into_reply(self) -> Result<Reply, PluginError> {
        Reply::json(&self.0)
    }

    fn describe(description: &mut ActionDescription, schemas: &mut Schemas) {
        description.output_schema = Some(schemas.of::<T>());
    }
}

impl IntoReply for Reply {
    fn into_reply(self) -> Result<Reply, PluginError> {
        Ok(self)
    }
}

impl IntoReply for Value {
    fn into_reply(self) -> Result<Reply, PluginError> {
        Reply::json(&self)
    }
}

/// No result: the reply is `null`.
impl IntoReply for () {
    fn into_reply(self) -> Result<Reply, PluginError> {
        Ok(Reply::empty())
    }

    fn describe(description: &mut ActionDescription, _schemas: &mut Schemas) {
        description.output_schema = Some(serde_json::json!({ "type": "null" }));
    }
}

/// A description with its name and kind; the macro fills in the rest.
#[doc(hidden)]
pub fn action(name: &str, kind: ActionKind) -> ActionDescription {
    ActionDescription { name: name.to_string(), kind, ..Default::default() }
}

/// An example from the macro's literals (checked as JSON when the plugin was compiled).
#[doc(hidden)]
pub fn example(name: &str, input: &str, output: &str) -> Example {
    Example {
        name: name.to_string(),
        input: serde_json::from_str(input).unwrap_or(Value::Null),
        output: serde_json::from_str(output).unwrap_or(Value::Null),
    }
}
