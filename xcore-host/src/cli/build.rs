//! `xcore plugin build`: cargo-build plugin crates, put each library in place, and record
//! each build (`build.sig`, signed with the host key of `plugins.runtime_dir`): a plugin
//! whose sources are signed by a trusted key then loads with the library this host built.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use xcore_config as config;
use xcore_reload::plugin_build;
use xcore_runtime::registry::discover;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build with optimisations.
    #[arg(long)]
    release: bool,
    /// Plugins folder (default: plugins.directory from the configuration).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// Only these plugins (default: every plugin folder that has a Cargo.toml).
    names: Vec<String>,
}

pub fn run(config_path: Option<&Path>, args: BuildArgs) -> Result<ExitCode> {
    let cfg = config::load(config_path).context("invalid configuration")?.config;
    let dir = args.plugins_dir.unwrap_or(cfg.plugins.directory);
    let mut failures = 0;
    for (name, pdir) in discover(&dir) {
        if !args.names.is_empty() && !args.names.contains(&name) {
            continue;
        }
        if !pdir.join("Cargo.toml").is_file() {
            continue;
        }
        let built =
            plugin_build::build(&pdir, args.release, false, |line| eprintln!("{line}")).and_then(|dest| {
                plugin_build::record(&pdir, &cfg.plugins.runtime_dir).map(|record| (dest, record))
            });
        match built {
            Ok((dest, record)) => {
                eprintln!("built {name} -> {} (recorded in {})", dest.display(), record.display())
            }
            // cargo's diagnostics were printed above as they came.
            Err(plugin_build::BuildError::Failed { .. }) => {
                eprintln!("error: {name}: cargo build failed (see above)");
                failures += 1;
            }
            Err(e) => {
                eprintln!("error: {name}: {e}");
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
