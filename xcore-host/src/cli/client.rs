//! `xcore plugin list|call|disable|enable`, `xcore jobs`, `xcore audit`: talk to a
//! running server over its HTTP API. Admin routes take the token from `--token`,
//! `XCORE_ADMIN_TOKEN`, the configuration's `server.admin_token`, or the file the server
//! generates (`{plugins.runtime_dir}/admin.token`), in that order.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use xcore_config as config;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's base URL (default: from the configuration's server.host and port).
    #[arg(long, env = "XCORE_URL")]
    url: Option<String>,
}

/// Where an admin command goes, and with which token.
#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The admin token (default: XCORE_ADMIN_TOKEN, server.admin_token, or the generated
    /// runtime/admin.token).
    #[arg(long, env = "XCORE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Plugin name.
    name: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Lists the jobs: schedule, next run, counts, last recorded run (the default).
    List(ClientArgs),
    /// Runs a job now and prints its outcome (admin).
    Run {
        /// The job id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this action (load, disable, job.run...).
    #[arg(long)]
    action: Option<String>,
    /// Only this target (a plugin, a job, an event).
    #[arg(long)]
    target: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    admin: AdminArgs,
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
    Ok(server_url(&cfg))
}

/// The server's own address from its configuration: `https://` when `server.tls` is set.
pub fn server_url(cfg: &config::Config) -> String {
    let scheme = if cfg.server.tls.files().is_some() { "https" } else { "http" };
    format!("{scheme}://{}:{}", cfg.server.host, cfg.server.port)
}

fn admin_token(config_path: Option<&Path>, args: &AdminArgs) -> Result<String> {
    if let Some(t) = args.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let cfg = config::load(config_path).context("invalid configuration")?.config;
    if let Some(t) = cfg.server.admin_token.filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    let file = cfg.plugins.runtime_dir.join("admin.token");
    std::fs::read_to_string(&file).map(|t| t.trim().to_string()).with_context(|| {
        format!(
            "no admin token: pass --token, set XCORE_ADMIN_TOKEN, or run where {} is readable",
            file.display()
        )
    })
}

/// A client for the server. When the configuration serves TLS, the certificate file of
/// `server.tls.cert` is the trust anchor (a self-signed certificate works); otherwise
/// the public web roots.
fn agent(config_path: Option<&Path>) -> Result<ureq::Agent> {
    // With `--url`, a configuration that does not load is no reason to refuse: plain roots.
    let cfg = config::load(config_path).map(|l| l.config).unwrap_or_default();
    agent_for(&cfg, None)
}

/// [`agent`] for a configuration already loaded, with an optional overall timeout.
pub fn agent_for(cfg: &config::Config, timeout: Option<std::time::Duration>) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut builder = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(timeout);
    if let Some((cert, _)) = cfg.server.tls.files() {
        let pem = std::fs::read(&cert).with_context(|| format!("server.tls.cert {}", cert.display()))?;
        let anchors = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<Certificate<'static>>, _>>()
            .with_context(|| format!("server.tls.cert {}", cert.display()))?;
        builder =
            builder.tls_config(TlsConfig::builder().root_certs(RootCerts::Specific(anchors.into())).build());
    }
    Ok(builder.build().into())
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
    let resp = agent(config_path)?.get(&url).call().with_context(|| format!("GET {url}"))?;
    finish(resp)
}

pub fn call(config_path: Option<&Path>, args: CallArgs) -> Result<ExitCode> {
    let body = args.json.unwrap_or_else(|| "null".into());
    serde_json::from_str::<serde::de::IgnoredAny>(&body).context("the payload is not valid JSON")?;
    let url =
        format!("{}/api/v1/plugins/{}/call/{}", base_url(config_path, &args.client)?, args.name, args.action);
    let resp = agent(config_path)?
        .post(&url)
        .header("content-type", "application/json")
        .header("x-request-id", format!("cli-{}", std::process::id()))
        .send(body.as_bytes())
        .with_context(|| format!("POST {url}"))?;
    finish(resp)
}

fn admin_post(config_path: Option<&Path>, args: &AdminArgs, path: &str) -> Result<ExitCode> {
    let url = format!("{}{path}", base_url(config_path, &args.client)?);
    let token = admin_token(config_path, args)?;
    let resp = agent(config_path)?
        .post(&url)
        .header("authorization", format!("Bearer {token}"))
        .send_empty()
        .with_context(|| format!("POST {url}"))?;
    finish(resp)
}

/// `xcore plugin disable NAME`.
pub fn disable(config_path: Option<&Path>, args: NameArgs) -> Result<ExitCode> {
    admin_post(config_path, &args.admin, &format!("/api/v1/plugins/{}/disable", args.name))
}

/// `xcore plugin enable NAME`.
pub fn enable(config_path: Option<&Path>, args: NameArgs) -> Result<ExitCode> {
    admin_post(config_path, &args.admin, &format!("/api/v1/plugins/{}/enable", args.name))
}

/// `xcore jobs [list]`, `xcore jobs run ID`.
pub fn jobs(config_path: Option<&Path>, cmd: Option<JobsCommand>) -> Result<ExitCode> {
    match cmd.unwrap_or(JobsCommand::List(ClientArgs { url: None })) {
        JobsCommand::List(args) => {
            let url = format!("{}/api/v1/jobs", base_url(config_path, &args)?);
            finish(agent(config_path)?.get(&url).call().with_context(|| format!("GET {url}"))?)
        }
        JobsCommand::Run { id, admin } => admin_post(config_path, &admin, &format!("/api/v1/jobs/{id}/run")),
    }
}

/// `xcore audit`.
pub fn audit(config_path: Option<&Path>, args: AuditArgs) -> Result<ExitCode> {
    let url = format!("{}/api/v1/audit", base_url(config_path, &args.admin.client)?);
    let token = admin_token(config_path, &args.admin)?;
    let mut req = agent(config_path)?.get(&url).header("authorization", format!("Bearer {token}"));
    req = req.query("limit", args.limit.to_string());
    if let Some(a) = &args.action {
        req = req.query("action", a);
    }
    if let Some(t) = &args.target {
        req = req.query("target", t);
    }
    finish(req.call().with_context(|| format!("GET {url}"))?)
}
