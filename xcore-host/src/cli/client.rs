//! `xcore plugin list|call`: talk to a running server over its HTTP API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use xcore_host::config;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's base URL (default: from the configuration's server.host and port).
    #[arg(long, env = "XCORE_URL")]
    url: Option<String>,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Plugin name.
    name: String,
    /// Action name.
    action: String,
    /// JSON payload (default: null).
    json: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

fn base_url(config_path: Option<&Path>, args: &ClientArgs) -> Result<String> {
    if let Some(u) = &args.url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let cfg = config::load(config_path).context("invalid configuration")?.config;
    Ok(format!("http://{}:{}", cfg.server.host, cfg.server.port))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Prints the body; a problem+json error goes to stderr and makes the exit code 1.
fn finish(mut resp: ureq::http::Response<ureq::Body>) -> Result<ExitCode> {
    let status = resp.status();
    let body = resp.body_mut().read_to_string().context("reading the reply")?;
    if status.is_success() {
        match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body)),
            Err(_) => println!("{body}"),
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} {}", status.as_u16(), body);
        Ok(ExitCode::FAILURE)
    }
}

pub fn list(config_path: Option<&Path>, args: ClientArgs) -> Result<ExitCode> {
    let url = format!("{}/api/v1/plugins", base_url(config_path, &args)?);
    let resp = agent().get(&url).call().with_context(|| format!("GET {url}"))?;
    finish(resp)
}

pub fn call(config_path: Option<&Path>, args: CallArgs) -> Result<ExitCode> {
    let body = args.json.unwrap_or_else(|| "null".into());
    serde_json::from_str::<serde::de::IgnoredAny>(&body).context("the payload is not valid JSON")?;
    let url =
        format!("{}/api/v1/plugins/{}/call/{}", base_url(config_path, &args.client)?, args.name, args.action);
    let resp = agent()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-request-id", format!("cli-{}", std::process::id()))
        .send(body.as_bytes())
        .with_context(|| format!("POST {url}"))?;
    finish(resp)
}
