//! `echo`: the smallest useful XCore plugin, and the one to copy first.
//!
//! Actions:
//! - `echo`: answers `{"echo": <payload>, "plugin": "echo", "version": "0.1.0"}`;
//! - `version`: answers `{"version": "0.1.0", "api_version": "..."}`;
//! - `greet`: answers with the `greeting` from the manifest's `config`.

use serde::Deserialize;
use serde_json::{json, Value};
use xcore_plugin_api::{export_plugin, Context, Plugin, PluginError, Reply, Request};

/// Read once from the manifest's `config` map.
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "hello".into()
}

struct Echo {
    config: Config,
}

impl Plugin for Echo {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        let config: Config = ctx.config_as()?;
        ctx.info(&format!("echo {} ready", env!("CARGO_PKG_VERSION")));
        Ok(Echo { config })
    }

    fn call(&self, ctx: &Context, req: Request<'_>) -> Result<Reply, PluginError> {
        match req.action() {
            "echo" => {
                let payload: Value = req.json()?;
                // Called as an event handler, the caller is `event:<name>`.
                if let Some(event) = req.meta().caller.strip_prefix("event:") {
                    ctx.info(&format!("echoing event {event}"));
                }
                Reply::json(&json!({
                    "echo": payload,
                    "plugin": ctx.name(),
                    "version": env!("CARGO_PKG_VERSION"),
                }))
            }
            "version" => Reply::json(&json!({
                "version": env!("CARGO_PKG_VERSION"),
                "api_version": xcore_plugin_api::API_VERSION,
            })),
            "greet" => {
                #[derive(Deserialize)]
                struct Greet {
                    name: String,
                }
                let who: Greet = req.json()?;
                Reply::json(&json!({ "message": format!("{}, {}!", self.config.greeting, who.name) }))
            }
            other => Err(PluginError::unknown_action(other)),
        }
    }
}

export_plugin!(Echo);
