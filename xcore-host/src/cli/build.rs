//! `xcore plugin build`: cargo-build plugin crates and put each library in place.
//!
//! A library that may be loaded is never overwritten in place (that crashes the host
//! that mapped it): the artifact is copied to a temporary file beside the target and
//! renamed over it, which swaps the directory entry and leaves the old inode intact.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use xcore_host::{config, manifest, runtime::registry::discover};

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
    let dir = match args.plugins_dir {
        Some(d) => d,
        None => config::load(config_path).context("invalid configuration")?.config.plugins.directory,
    };
    let mut failures = 0;
    for (name, pdir) in discover(&dir) {
        if !args.names.is_empty() && !args.names.contains(&name) {
            continue;
        }
        if !pdir.join("Cargo.toml").is_file() {
            continue;
        }
        match build_one(&pdir, args.release) {
            Ok(dest) => eprintln!("built {name} -> {}", dest.display()),
            Err(e) => {
                eprintln!("error: {name}: {e:#}");
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn build_one(pdir: &Path, release: bool) -> Result<PathBuf> {
    let m = manifest::load(pdir)?.manifest;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(pdir.join("Cargo.toml"))
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if release {
        cmd.arg("--release");
    }
    let mut child = cmd.spawn().context("running cargo")?;
    let mut artifact = None;
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            let is_cdylib = msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib"));
            let manifest_path = msg["manifest_path"].as_str().map(PathBuf::from);
            let ours =
                manifest_path.as_deref().and_then(|p| p.parent()).map(|p| same_dir(p, pdir)).unwrap_or(false);
            if is_cdylib && ours {
                artifact = msg["filenames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str())
                    .find(|f| f.ends_with(std::env::consts::DLL_SUFFIX))
                    .map(PathBuf::from);
            }
        }
    }
    if !child.wait()?.success() {
        bail!("cargo build failed (see above)");
    }
    let Some(artifact) = artifact else {
        bail!("cargo produced no cdylib for {}; is `crate-type = [\"cdylib\"]` set?", pdir.display())
    };
    let dest = m.library_path();
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = dest.with_extension("tmp-build");
    std::fs::copy(&artifact, &tmp).with_context(|| format!("copying {}", artifact.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(dest)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
