//! `xcore keys generate`, `xcore keys trust`, `xcore plugin sign`, `xcore plugin verify`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use xcore_config as config;
use xcore_manifest as manifest;
use xcore_security::{build_record, host_key, keys, signing};

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Folder for the key pair (default `keys`; never the trusted-keys folder: trust the
    /// public half with `xcore keys trust`).
    #[arg(long, default_value = "keys")]
    dir: PathBuf,
    /// Base name: writes NAME.key (private, mode 0600) and NAME.pub.
    #[arg(long, default_value = "dev")]
    name: String,
    /// RSA modulus size.
    #[arg(long, default_value_t = keys::DEFAULT_BITS)]
    bits: usize,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// A public key (SPKI PEM, `BEGIN PUBLIC KEY`), such as a plugin author's NAME.pub.
    file: PathBuf,
    /// The name it is kept under, NAME.pub (default: the file's name without `.pub`).
    #[arg(long)]
    name: Option<String>,
    /// The trusted-keys folder (default: security.trusted_keys_dir, `keys/trusted`).
    #[arg(long)]
    dir: Option<PathBuf>,
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

pub fn keygen(args: KeygenArgs) -> Result<ExitCode> {
    let (private, public) = keys::write_keypair(&args.dir, &args.name, args.bits)?;
    let fp = keys::fingerprint(&keys::load_public(&public)?);
    println!("private key: {} (keep it secret)", private.display());
    println!("public key:  {} (give it to hosts: `xcore keys trust {}`)", public.display(), public.display());
    println!("fingerprint: {fp}");
    Ok(ExitCode::SUCCESS)
}

pub fn trust(config_path: Option<&Path>, args: TrustArgs) -> Result<ExitCode> {
    let key = keys::load_public(&args.file).with_context(|| {
        format!(
            "{} is not a public key to trust (pass the .pub half, never the private key)",
            args.file.display()
        )
    })?;
    let fp = keys::fingerprint(&key);
    let dir = match args.dir {
        Some(d) => d,
        None => config::load(config_path).context("invalid configuration")?.config.security.trusted_keys_dir,
    };
    let name = match args.name {
        Some(n) => n,
        None => {
            let file_name =
                args.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            file_name.strip_suffix(".pub").unwrap_or(&file_name).to_string()
        }
    };
    let dest = dir.join(format!("{name}.pub"));
    if dest.exists() {
        let existing =
            keys::load_public(&dest).with_context(|| format!("the trusted key {}", dest.display()))?;
        if existing == key {
            println!("already trusted: {} ({fp})", dest.display());
            return Ok(ExitCode::SUCCESS);
        }
        bail!(
            "{} exists and holds another key ({}); refusing to overwrite it: pass --name to trust {fp} under another name",
            dest.display(),
            keys::fingerprint(&existing)
        );
    }
    let path = keys::save_public(&dir, &name, &key)?;
    println!("trusted {} as {}", args.file.display(), path.display());
    println!("fingerprint: {fp}");
    println!("plugins whose sources this key signed load here (a server reads the folder when it starts)");
    Ok(ExitCode::SUCCESS)
}

fn plugin_identity(dir: &Path) -> Result<manifest::Manifest> {
    Ok(manifest::load(dir)?.manifest)
}

/// A crate that is its own Cargo workspace must carry its Cargo.lock: `xcore plugin add`
/// builds with `--locked`, and the signature must cover the versions built.
fn check_lockfile(dir: &Path) -> Result<()> {
    if dir.join("Cargo.lock").is_file() {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["locate-project", "--workspace", "--message-format", "plain", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .output()
        .with_context(|| format!("running {cargo} locate-project"))?;
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let own =
        out.status.success() && root.parent().and_then(|p| p.canonicalize().ok()) == dir.canonicalize().ok();
    if own {
        bail!(
            "{}: missing; `xcore plugin add` builds with --locked, so the signed sources must pin their \
             dependencies: run `cargo generate-lockfile --manifest-path {}`, then sign again and commit both",
            dir.join("Cargo.lock").display(),
            dir.join("Cargo.toml").display()
        );
    }
    Ok(())
}

pub fn sign(args: SignArgs) -> Result<ExitCode> {
    let m = plugin_identity(&args.dir)?;
    let (name, version) = (m.name.clone(), m.version.to_string());
    // A crate: its sources are signed, its library left out (the host that builds it
    // records the build). A folder without Cargo.toml: everything, the library included.
    let library =
        args.dir.join("Cargo.toml").is_file().then(|| m.entry_point.to_string_lossy().replace('\\', "/"));
    if library.is_some() {
        check_lockfile(&args.dir)?;
    }
    let key = keys::load_private(&args.key)?;
    let sig = signing::sign(&args.dir, &name, &version, library.as_deref(), &key)?;
    let path = signing::write_signature(&args.dir, &sig)?;
    match &library {
        Some(lib) => {
            println!(
                "signed the sources of {name} {version}: {} files, key {} -> {}",
                sig.files.len(),
                sig.key,
                path.display()
            );
            println!(
                "the library {lib} is left out: a host builds it from these sources and records its build"
            );
            println!(
                "commit {} with the sources; hosts that trust the key install it with `xcore plugin add`",
                signing::SIGNATURE_FILE
            );
        }
        None => println!(
            "signed {name} {version}: {} files, library included, key {} -> {}",
            sig.files.len(),
            sig.key,
            path.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(config_path: Option<&Path>, args: VerifyArgs) -> Result<ExitCode> {
    let m = plugin_identity(&args.dir)?;
    let (name, version) = (m.name.clone(), m.version.to_string());
    let cfg = config::load(config_path).context("invalid configuration")?.config;
    let files = if args.key.is_empty() { cfg.security.trusted_key_files() } else { args.key };
    if files.is_empty() {
        bail!("no trusted key: pass --key PUB or trust one with `xcore keys trust PUB` (security.trusted_keys_dir)");
    }
    let trusted = files.iter().map(|f| keys::load_public(f)).collect::<Result<Vec<_>, _>>()?;
    let report = signing::verify_report(&args.dir, &name, &version, &trusted);
    for f in &report.files {
        println!("{:<9} {}", f.status.to_string(), f.path);
    }
    println!("key: {:?}", report.key);
    let mut result = Ok(());
    if let (Some(lib), Ok(v)) = (&report.library, &report.result) {
        // A signature of sources: the library must be the one this host built from them.
        let runtime = &cfg.plugins.runtime_dir;
        let host = host_key::public(runtime)?;
        let check = build_record::check(
            &args.dir,
            &name,
            &version,
            lib,
            &v.sources_sha256,
            host.as_ref(),
            &host_key::private_path(runtime),
        )
        .map_err(|e| e.to_string())
        .and_then(|record| {
            let actual = xcore_security::digest::sha256_file(&args.dir.join(lib))
                .map_err(|e| format!("{}: {e}", args.dir.join(lib).display()))?;
            if actual == record.library_sha256 {
                Ok(())
            } else {
                Err(format!(
                    "{lib} is not the library this host built (sha256 {actual}, recorded {})",
                    record.library_sha256
                ))
            }
        });
        match &check {
            Ok(()) => println!("{:<9} {lib} (built by this host, {})", "ok", signing::BUILD_RECORD_FILE),
            Err(e) => println!("{:<9} {lib}: {e}", "refused"),
        }
        result = check;
    }
    match (&report.result, result) {
        (Ok(v), Ok(())) => {
            println!("OK: {name} {version}, {} files, signed by {}", v.files, v.key_fingerprint);
            Ok(ExitCode::SUCCESS)
        }
        (Err(e), _) => {
            println!("REFUSED: {e}");
            Ok(ExitCode::FAILURE)
        }
        (Ok(_), Err(e)) => {
            println!("REFUSED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
