//! Command-line interface (clap). One file per command group.

mod build;
mod client;
mod install;
mod security;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use xcore_host::config;

/// XCore: loads Rust plugins, supervises them, and serves them over HTTP.
#[derive(Debug, Parser)]
#[command(name = "xcore", version, propagate_version = true)]
pub struct Cli {
    /// The configuration file (default: ./xcore.yaml when present, else built-in defaults).
    #[arg(long, short, global = true, env = "XCORE_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the host: loads the plugins and serves the HTTP control API.
    Serve(serve::ServeArgs),
    /// Works with plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Works with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manages signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The sandbox worker mode: started by the host only, never by hand.
    #[command(name = "__sandbox-worker", hide = true)]
    SandboxWorker {
        /// The worker's specification (JSON), written by the host.
        #[arg(long)]
        spec: String,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Lists the plugins of a running server.
    List(client::ClientArgs),
    /// Calls a plugin action on a running server and prints the JSON reply.
    Call(client::CallArgs),
    /// Builds plugin crates with cargo and puts each library where its manifest's
    /// entry_point says (written to a temporary file, then renamed into place).
    Build(build::BuildArgs),
    /// Signs a plugin folder: writes plugin.sig (SHA-256 of every file, RSA-PSS).
    Sign(security::SignArgs),
    /// Verifies a plugin folder's signature and prints the result per file.
    Verify(security::VerifyArgs),
    /// Installs a plugin from git: clone, build, check its signature, move into place,
    /// and ask a running server to load it.
    Add(install::AddArgs),
    /// Unloads a plugin from a running server and removes its folder.
    Rm(install::RmArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generates an RSA key pair (3072 bits by default) as PEM files.
    Generate(security::KeygenArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validates the configuration and prints the effective one, secrets masked.
    Check,
}

/// Parses the command line and runs it.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    if let Command::SandboxWorker { spec } = &cli.command {
        // No logger: the worker's stderr is a pipe the host reads into its own log.
        return Ok(xcore_host::runtime::sandbox::worker::run(spec));
    }
    if !matches!(cli.command, Command::Serve(_)) {
        // `serve` sets up logging from the configuration; short commands log to stderr.
        xcore_host::logging::init_cli(log::LevelFilter::Warn);
    }
    match cli.command {
        Command::Serve(args) => serve::run(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::List(args)) => client::list(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Call(args)) => client::call(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Build(args)) => build::run(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Sign(args)) => security::sign(args),
        Command::Plugin(PluginCommand::Add(args)) => install::add(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Rm(args)) => install::rm(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Verify(args)) => security::verify(cli.config.as_deref(), args),
        Command::Keys(KeysCommand::Generate(args)) => security::keygen(cli.config.as_deref(), args),
        Command::Config(ConfigCommand::Check) => config_check(cli.config.as_deref()),
        Command::SandboxWorker { .. } => unreachable!("handled above"),
    }
}

fn config_check(path: Option<&std::path::Path>) -> Result<ExitCode> {
    let loaded = config::load(path).context("invalid configuration")?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    match &loaded.source {
        Some(p) => eprintln!("configuration {} is valid", p.display()),
        None => eprintln!("no configuration file: built-in defaults"),
    }
    print!("{}", loaded.config.to_masked_yaml());
    Ok(ExitCode::SUCCESS)
}
