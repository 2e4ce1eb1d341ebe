//! `echo`: the smallest useful XCore plugin, and the one to copy first.
//!
//! Actions (typed with `#[plugin]`; `xcore plugin run plugins/echo echo '{"a":1}'` calls
//! one without a server):
//! - `echo`: answers `{"echo": <payload>, "plugin": "echo", "version": "0.1.0"}`;
//! - `version`: answers `{"version": "0.1.0", "api_version": "<ABI>", "sdk_version": "<SDK>"}`;
//! - `greet` `{"name": "Ada"}`: answers with the `greeting` from the manifest's `config`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xcore_plugin_sdk::{export_plugin, plugin, Context, Json, Plugin, PluginError, Request};

/// Read once from the manifest's `config` map.
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "hello".into()
}

/// The `echo` action's reply.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Echoed {
    /// What was sent.
    pub echo: Value,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
}

/// The `version` action's reply.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Versions {
    /// The plugin's version.
    pub version: String,
    /// The ABI it was built on (the one the host checks).
    pub api_version: String,
    /// The SDK it was built with.
    pub sdk_version: String,
}

/// The `greet` action's payload.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Greet {
    /// Who to greet.
    pub name: String,
}

/// The `greet` action's reply.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Greeting {
    /// The greeting.
    pub message: String,
}

pub struct Echo {
    config: Config,
}

#[plugin]
impl Plugin for Echo {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        let config: Config = ctx.config_as()?;
        ctx.info(&format!("echo {} ready", env!("CARGO_PKG_VERSION")));
        Ok(Echo { config })
    }

    /// Answers with what it was sent.
    ///
    /// Also an event handler (plugin.yaml's hooks): then the payload is
    /// `{"event", "payload"}` and the caller `event:<name>`.
    #[action(example(
        name = "an object",
        input = r#"{"hello": "world"}"#,
        output = r#"{"echo": {"hello": "world"}, "plugin": "echo", "version": "0.1.0"}"#
    ))]
    fn echo(
        &self,
        ctx: &Context,
        req: Request<'_>,
        Json(payload): Json<Value>,
    ) -> Result<Json<Echoed>, PluginError> {
        if let Some(event) = req.meta().caller.strip_prefix("event:") {
            ctx.info(&format!("echoing event {event}"));
        }
        Ok(Json(Echoed {
            echo: payload,
            plugin: ctx.name().to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    /// The plugin's version, and the ABI and SDK it was built with.
    #[action]
    fn version(&self) -> Json<Versions> {
        Json(Versions {
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: xcore_plugin_sdk::ABI_VERSION.into(),
            sdk_version: xcore_plugin_sdk::SDK_VERSION.into(),
        })
    }

    /// Greets someone with the manifest's `config.greeting`.
    #[action(example(input = r#"{"name": "Ada"}"#, output = r#"{"message": "hello, Ada!"}"#))]
    fn greet(&self, Json(who): Json<Greet>) -> Json<Greeting> {
        Json(Greeting { message: format!("{}, {}!", self.config.greeting, who.name) })
    }
}

export_plugin!(Echo);
