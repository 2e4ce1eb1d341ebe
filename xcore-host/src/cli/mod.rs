//! Command-line interface (clap). One file per command group.

mod build;
mod client;
mod install;
mod logs;
mod migrate;
mod run;
mod security;
mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use xcore_config as config;

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
    /// Reads the host's log files: tail (and follow), stats, health.
    #[command(subcommand)]
    Logs(logs::LogsCommand),
    /// Cron jobs of a running server: list (default), run ID.
    Jobs {
        #[command(subcommand)]
        cmd: Option<client::JobsCommand>,
    },
    /// Reads the audit log of a running server (admin actions, newest first).
    Audit(client::AuditArgs),
    /// Named API tokens with a role: create NAME --role admin|operator|reader.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The host's schema migrations: status (default), run, revert.
    Migrate(migrate::MigrateArgs),
    /// Builds the static documentation site: docs/*.md, one page per plugin, and the
    /// HTTP API reference from the OpenAPI document. Broken internal links fail it.
    Docgen(DocgenArgs),
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
    /// Disables a plugin on a running server: unloaded, and kept so across restarts.
    Disable(client::NameArgs),
    /// Enables a disabled plugin on a running server and loads it.
    Enable(client::NameArgs),
    /// Builds plugin crates with cargo and puts each library where its manifest's
    /// entry_point says (written to a temporary file, then renamed into place).
    Build(build::BuildArgs),
    /// Signs a plugin folder: writes plugin.sig (RSA-PSS over the SHA-256 of its files). A
    /// crate's sources are signed, its built library left out (a host builds and records it).
    Sign(security::SignArgs),
    /// Verifies a plugin folder's signature and prints the result per file.
    Verify(security::VerifyArgs),
    /// Installs a plugin from git: clone, check its source signature, build it (--locked),
    /// record the build, move into place, and ask a running server to load it.
    Add(install::AddArgs),
    /// Unloads a plugin from a running server and removes its folder.
    Rm(install::RmArgs),
    /// Creates a plugin crate from plugin-template/ (the same files cargo-generate renders).
    New(NewArgs),
    /// Calls one action of a built plugin without a server: the library of DIR's
    /// plugin.yaml, loaded by the host's loader, against the test kit's host (the host's
    /// services in a temporary folder); prints the JSON reply.
    Run(run::RunArgs),
}

#[derive(Debug, clap::Args)]
struct NewArgs {
    /// The plugin's name (`[a-z0-9_-]+`).
    name: String,
    /// Run it in the sandboxed tier.
    #[arg(long)]
    sandboxed: bool,
    /// One line about it.
    #[arg(long, default_value = "An XCore plugin")]
    description: String,
    /// Its author.
    #[arg(long, default_value = "unknown")]
    author: String,
    /// Plugins folder (default: plugins.directory from the configuration).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// The `xcore-plugin-api/` folder of an XCore checkout (holding sdk/ and testkit/),
    /// relative to the new crate or absolute; for a plugin inside the repository.
    #[arg(long, default_value = "../../xcore-plugin-api", conflicts_with = "api_git")]
    api_path: String,
    /// Take the SDK from this git repository of XCore instead (a plugin outside the
    /// repository); needs --api-tag.
    #[arg(long, requires = "api_tag")]
    api_git: Option<String>,
    /// The tag of --api-git to build against.
    #[arg(long, requires = "api_git")]
    api_tag: Option<String>,
}

#[derive(Debug, clap::Args)]
struct DocgenArgs {
    /// Markdown sources.
    #[arg(long, default_value = "docs")]
    docs: PathBuf,
    /// Plugins folder (default: plugins.directory from the configuration).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "target/site")]
    out: PathBuf,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generates an RSA key pair (3072 bits by default) as PEM files.
    Generate(security::KeygenArgs),
    /// Trusts a public key: copies it into the trusted-keys folder and prints its fingerprint.
    Trust(security::TrustArgs),
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
        return Ok(xcore_runtime::sandbox::worker::run(spec));
    }
    if !matches!(cli.command, Command::Serve(_)) {
        // `serve` sets up logging from the configuration; short commands log to stderr.
        xcore_config::logging::init_cli(log::LevelFilter::Warn);
    }
    match cli.command {
        Command::Serve(args) => serve::run(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::List(args)) => client::list(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Call(args)) => client::call(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Disable(args)) => client::disable(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Enable(args)) => client::enable(cli.config.as_deref(), args),
        Command::Jobs { cmd } => client::jobs(cli.config.as_deref(), cmd),
        Command::Audit(args) => client::audit(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Build(args)) => build::run(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Sign(args)) => security::sign(args),
        Command::Plugin(PluginCommand::Add(args)) => install::add(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Rm(args)) => install::rm(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::New(args)) => new_plugin(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Verify(args)) => security::verify(cli.config.as_deref(), args),
        Command::Plugin(PluginCommand::Run(args)) => run::run(args),
        Command::Keys(KeysCommand::Generate(args)) => security::keygen(args),
        Command::Keys(KeysCommand::Trust(args)) => security::trust(cli.config.as_deref(), args),
        Command::Docgen(args) => docgen(cli.config.as_deref(), args),
        Command::Logs(cmd) => logs::run(cmd),
        Command::Token(cmd) => token::run(cli.config.as_deref(), cmd),
        Command::Migrate(args) => migrate::run(cli.config.as_deref(), args),
        Command::Config(ConfigCommand::Check) => config_check(cli.config.as_deref()),
        Command::SandboxWorker { .. } => unreachable!("handled above"),
    }
}

fn new_plugin(path: Option<&std::path::Path>, args: NewArgs) -> Result<ExitCode> {
    let dir = match args.plugins_dir {
        Some(d) => d,
        None => config::load(path).context("invalid configuration")?.config.plugins.directory,
    };
    let dest = dir.join(&args.name);
    let vars = xcore_tools::template::TemplateVars {
        name: args.name.clone(),
        description: args.description,
        author: args.author,
        execution_mode: if args.sandboxed { "sandboxed" } else { "trusted" }.into(),
        api: match (args.api_git, args.api_tag) {
            (Some(url), Some(tag)) => xcore_tools::template::ApiSource::Git { url, tag },
            _ => xcore_tools::template::ApiSource::Path(args.api_path),
        },
    };
    let files = xcore_tools::template::render(&dest, &vars)?;
    println!("created {} ({} files)", dest.display(), files.len());
    println!("next: xcore plugin build {}   (then it loads with `xcore serve`)", args.name);
    println!(
        "to publish it: cargo generate-lockfile --manifest-path {0}/Cargo.toml; \
         xcore plugin sign {0} --key keys/NAME.key (xcore keys generate makes one); commit plugin.sig \
         with the sources. Hosts that trust your public key (xcore keys trust NAME.pub) install it \
         with `xcore plugin add URL`; unsigned, it is refused under the default policy",
        dest.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn docgen(path: Option<&std::path::Path>, args: DocgenArgs) -> Result<ExitCode> {
    let plugins_dir = match args.plugins_dir {
        Some(d) => d,
        None => config::load(path).context("invalid configuration")?.config.plugins.directory,
    };
    let descriptions = run::descriptions(&plugins_dir);
    let input = xcore_tools::docgen::DocgenInput {
        docs_dir: args.docs,
        plugins_dir,
        openapi: xcore_api::openapi::document(),
        descriptions,
        out_dir: args.out.clone(),
    };
    match xcore_tools::docgen::build(&input) {
        Ok(r) => {
            println!(
                "{} pages in {}: {} written, {} unchanged, {} removed",
                r.pages,
                args.out.display(),
                r.written,
                r.unchanged,
                r.removed
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(xcore_tools::docgen::DocgenError::BrokenLinks(links)) => {
            for l in &links {
                eprintln!("broken link: {l}");
            }
            eprintln!(
                "{} broken internal link(s); the site was written to {}",
                links.len(),
                args.out.display()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
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
