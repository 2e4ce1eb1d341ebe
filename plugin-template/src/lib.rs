//! `{{project-name}}`: {{description}}
//!
//! Actions:
//! - `greet` `{"name": "Ada", "shout": false}` -> `{"message": "Hello, Ada!"}`;
//! - `route.greet`: the same behind the declared route `POST /plugins/{{project-name}}/greet`.

use serde::{Deserialize, Serialize};
use xcore_plugin_sdk::{export_plugin, Context, Plugin, PluginError, Reply, Request};

/// The `greet` action's payload.
#[derive(Debug, Deserialize)]
pub struct GreetIn {
    /// Who to greet.
    pub name: String,
    /// Upper-case the message.
    #[serde(default)]
    pub shout: bool,
}

/// The `greet` action's reply.
#[derive(Debug, Serialize, PartialEq)]
pub struct GreetOut {
    /// The greeting.
    pub message: String,
}

/// What the host sends for a declared route.
#[derive(Debug, Deserialize)]
struct RouteCall {
    #[serde(default)]
    body: serde_json::Value,
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

struct TemplatePlugin {
    greeting: String,
}

impl Plugin for TemplatePlugin {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        let config: Config = ctx.config_as()?;
        ctx.info("ready");
        Ok(TemplatePlugin { greeting: config.greeting })
    }

    fn call(&self, _ctx: &Context, req: Request<'_>) -> Result<Reply, PluginError> {
        match req.action() {
            "greet" => Reply::json(&greet(&self.greeting, req.json()?)?),
            "route.greet" => {
                let call: RouteCall = req.json()?;
                let input = serde_json::from_value(call.body)
                    .map_err(|e| PluginError::invalid_payload(format!("body: {e}")))?;
                Reply::json(&greet(&self.greeting, input)?)
            }
            other => Err(PluginError::unknown_action(other)),
        }
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
