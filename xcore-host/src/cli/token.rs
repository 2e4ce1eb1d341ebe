//! `xcore token create NAME --role ROLE`: a named API token, printed once; only its
//! SHA-256 is kept, in `{plugins.runtime_dir}/tokens.json` (mode 0600). `xcore token list`
//! shows the names and roles, `xcore token revoke NAME` removes one. A running server
//! reads the file again when it changes, so both take effect at its next request.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use xcore_api::Role;
use xcore_config as config;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a token and prints it once (stdout); it cannot be shown again.
    Create {
        /// Its name (`[a-z0-9_-]`, up to 64): the audit log names it `token:NAME@peer`.
        name: String,
        /// admin (everything), operator (reload, reset, enable, disable, run a job) or
        /// reader (the read routes, the audit log included).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The runtime folder (default: plugins.runtime_dir from the configuration).
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
    /// Lists the named tokens: name, role, creation time (never a token or its hash).
    List {
        /// The runtime folder (default: plugins.runtime_dir from the configuration).
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
    /// Revokes a named token: a running server refuses it from its next request on.
    Revoke {
        /// The token's name.
        name: String,
        /// The runtime folder (default: plugins.runtime_dir from the configuration).
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
}

fn runtime_dir(config_path: Option<&Path>, given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => Ok(config::load(config_path).context("invalid configuration")?.config.plugins.runtime_dir),
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| e.to_string())
}

pub fn run(config_path: Option<&Path>, cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create { name, role, runtime_dir: given } => {
            let dir = runtime_dir(config_path, given)?;
            let token = xcore_api::auth::create_token(&dir, &name, role)?;
            eprintln!(
                "token '{name}' ({}) created in {}; it is shown this once:",
                role.as_str(),
                dir.join(xcore_api::auth::TOKENS_FILE).display()
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List { runtime_dir: given } => {
            let dir = runtime_dir(config_path, given)?;
            let tokens = xcore_api::auth::list_tokens(&dir)?;
            if tokens.is_empty() {
                eprintln!("no named tokens in {}", dir.join(xcore_api::auth::TOKENS_FILE).display());
            }
            for (name, role, created) in tokens {
                println!("{name}\t{}\t{created}", role.as_str());
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { name, runtime_dir: given } => {
            let dir = runtime_dir(config_path, given)?;
            let role = xcore_api::auth::revoke_token(&dir, &name)?;
            eprintln!("token '{name}' ({}) revoked", role.as_str());
            Ok(ExitCode::SUCCESS)
        }
    }
}
