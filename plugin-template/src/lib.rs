//! `{{project-name}}`: {{description}}
//!
//! Actions (typed with `#[plugin]`: each handler's input and reply are Rust types, their
//! JSON Schemas go into the host's OpenAPI document, and the host refuses a plugin.yaml
//! that routes to an action this code does not have):
//! - `greet` `{"name": "Ada", "shout": false}` -> `{"message": "Hello, Ada!"}`;
//! - `route.greet`: the same behind the declared route `POST /plugins/{{project-name}}/greet`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use xcore_plugin_sdk::{export_plugin, plugin, Context, Json, Plugin, PluginError};

/// The `greet` action's payload.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GreetIn {
    /// Who to greet.
    pub name: String,
    /// Upper-case the message.
    #[serde(default)]
    pub shout: bool,
}

/// The `greet` action's reply.
#[derive(Debug, Serialize, PartialEq, JsonSchema)]
pub struct GreetOut {
    /// The greeting.
    pub message: String,
}

/// The plugin's logic, kept apart from the host so that it is easy to test.
pub fn greet(greeting: &str, input: GreetIn) -> Result<GreetOut, PluginError> {
    if input.name.trim().is_empty() {
        return Err(PluginError::invalid_payload("name must not be empty"));
    }
    let message = format!("{greeting}, {}!", input.name.trim());
    Ok(GreetOut { message: if input.shout { message.to_uppercase() } else { message } })
}

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "Hello".into()
}

pub struct TemplatePlugin {
    greeting: String,
}

#[plugin]
impl Plugin for TemplatePlugin {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        let config: Config = ctx.config_as()?;
        ctx.info("ready");
        Ok(TemplatePlugin { greeting: config.greeting })
    }

    /// Greets someone with the manifest's `config.greeting`.
    #[action(example(input = r#"{"name": "Ada"}"#, output = r#"{"message": "Hello, Ada!"}"#))]
    fn greet(&self, Json(input): Json<GreetIn>) -> Result<Json<GreetOut>, PluginError> {
        greet(&self.greeting, input).map(Json)
    }

    /// The same behind the route plugin.yaml declares.
    #[route(POST, "/greet", name = "route.greet")]
    fn route_greet(&self, Json(input): Json<GreetIn>) -> Result<Json<GreetOut>, PluginError> {
        greet(&self.greeting, input).map(Json)
    }
}

export_plugin!(TemplatePlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_and_shouts() {
        let out = greet("Hello", GreetIn { name: "Ada".into(), shout: false }).unwrap();
        assert_eq!(out, GreetOut { message: "Hello, Ada!".into() });
        let out = greet("Hello", GreetIn { name: "Ada".into(), shout: true }).unwrap();
        assert_eq!(out.message, "HELLO, ADA!");
    }

    #[test]
    fn refuses_an_empty_name() {
        let err = greet("Hello", GreetIn { name: " ".into(), shout: false }).unwrap_err();
        assert_eq!(err.code, "invalid_payload");
    }
}
