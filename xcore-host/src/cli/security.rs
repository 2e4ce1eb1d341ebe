//! `xcore keys generate`, `xcore plugin sign`, `xcore plugin verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use xcore_host::security::{keys, signing};
use xcore_host::{config, manifest};

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Folder for the key pair (default: security.trusted_keys_dir, `keys`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Base name: writes NAME.key (private, mode 0600) and NAME.pub.
    #[arg(long, default_value = "dev")]
    name: String,
    /// RSA modulus size.
    #[arg(long, default_value_t = keys::DEFAULT_BITS)]
    bits: usize,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The plugin folder.
    dir: PathBuf,
    /// The private key (PEM).
    #[arg(long)]
    key: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The plugin folder.
    dir: PathBuf,
    /// Trusted public keys (default: those of the configuration).
    #[arg(long)]
    key: Vec<PathBuf>,
}

pub fn keygen(config_path: Option<&Path>, args: KeygenArgs) -> Result<ExitCode> {
    let dir = match args.dir {
        Some(d) => d,
        None => config::load(config_path).context("invalid configuration")?.config.security.trusted_keys_dir,
    };
    let (private, public) = keys::write_keypair(&dir, &args.name, args.bits)?;
    let fp = keys::fingerprint(&keys::load_public(&public)?);
    println!("private key: {} (keep it secret)", private.display());
    println!("public key:  {} (trusted by hosts that list it)", public.display());
    println!("fingerprint: {fp}");
    Ok(ExitCode::SUCCESS)
}

fn plugin_identity(dir: &Path) -> Result<(String, String)> {
    let m = manifest::load(dir)?.manifest;
    Ok((m.name, m.version.to_string()))
}

pub fn sign(args: SignArgs) -> Result<ExitCode> {
    let (name, version) = plugin_identity(&args.dir)?;
    let key = keys::load_private(&args.key)?;
    let sig = signing::sign(&args.dir, &name, &version, &key)?;
    let path = signing::write_signature(&args.dir, &sig)?;
    println!("signed {name} {version}: {} files, key {} -> {}", sig.files.len(), sig.key, path.display());
    Ok(ExitCode::SUCCESS)
}

pub fn verify(config_path: Option<&Path>, args: VerifyArgs) -> Result<ExitCode> {
    let (name, version) = plugin_identity(&args.dir)?;
    let files = if args.key.is_empty() {
        config::load(config_path).context("invalid configuration")?.config.security.trusted_key_files()
    } else {
        args.key
    };
    if files.is_empty() {
        bail!("no trusted key: pass --key PUB or configure security.trusted_keys / trusted_keys_dir");
    }
    let trusted = files.iter().map(|f| keys::load_public(f)).collect::<Result<Vec<_>, _>>()?;
    let report = signing::verify_report(&args.dir, &name, &version, &trusted);
    for f in &report.files {
        println!("{:<9} {}", f.status.to_string(), f.path);
    }
    println!("key: {:?}", report.key);
    match &report.result {
        Ok(v) => {
            println!("OK: {name} {version}, {} files, signed by {}", v.files, v.key_fingerprint);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("REFUSED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
