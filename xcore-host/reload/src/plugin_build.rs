//! Building a plugin crate with cargo and putting its library where the manifest points.
//!
//! A library that may be loaded is never overwritten in place (that crashes a host that
//! mapped it): the artifact is copied to a temporary file beside the target and renamed
//! over it, which swaps the directory entry and leaves the old inode intact. Used by
//! `xcore plugin build`, `xcore serve --dev` and `xcore plugin add`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

use xcore_manifest as manifest;

/// Why a build did not produce a library.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// cargo could not run, or a file could not be written.
    #[error("{0}")]
    Io(String),
    /// cargo reported errors (its diagnostics are in `output`).
    #[error("cargo build of {dir} failed:\n{output}")]
    Failed {
        /// The plugin folder.
        dir: PathBuf,
        /// cargo's rendered diagnostics.
        output: String,
    },
    /// The crate is not a cdylib.
    #[error("cargo produced no cdylib for {0}; is `crate-type = [\"cdylib\"]` set in its Cargo.toml?")]
    NoLibrary(PathBuf),
}

/// Builds the crate in `plugin_dir` and installs its library at the manifest's
/// `entry_point`. With `locked`, cargo must use the crate's `Cargo.lock` unchanged
/// (`--locked`: what `xcore plugin add` builds is what the author signed). `on_line`
/// receives cargo's progress lines (stderr) as they come.
pub fn build(
    plugin_dir: &Path,
    release: bool,
    locked: bool,
    mut on_line: impl FnMut(&str),
) -> Result<PathBuf, BuildError> {
    let m = manifest::load(plugin_dir)?.manifest;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(plugin_dir.join("Cargo.toml"))
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if release {
        cmd.arg("--release");
    }
    if locked {
        cmd.arg("--locked");
    }
    let mut child = cmd.spawn().map_err(|e| BuildError::Io(format!("running cargo: {e}")))?;
    // stderr (progress and rendered errors) is read on its own thread so neither pipe
    // can fill up and stall cargo.
    let stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        if let Some(err) = stderr {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
        }
        all
    });
    let mut artifact = None;
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            while let Ok(l) = rx.try_recv() {
                on_line(&l);
            }
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            let is_cdylib = msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib"));
            let ours = msg["manifest_path"]
                .as_str()
                .map(PathBuf::from)
                .as_deref()
                .and_then(Path::parent)
                .is_some_and(|p| same_dir(p, plugin_dir));
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
    let status = child.wait().map_err(|e| BuildError::Io(format!("waiting for cargo: {e}")))?;
    let output = reader.join().unwrap_or_default();
    while let Ok(l) = rx.try_recv() {
        on_line(&l);
    }
    if !status.success() {
        return Err(BuildError::Failed { dir: plugin_dir.to_path_buf(), output });
    }
    let artifact = artifact.ok_or_else(|| BuildError::NoLibrary(plugin_dir.to_path_buf()))?;
    install(&artifact, &m.library_path())?;
    Ok(m.library_path())
}

/// Copies `artifact` to `dest` through a temporary file and a rename.
pub fn install(artifact: &Path, dest: &Path) -> Result<(), BuildError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| BuildError::Io(format!("creating {}: {e}", parent.display())))?;
    }
    let tmp = dest.with_extension("tmp-build");
    std::fs::copy(artifact, &tmp)
        .map_err(|e| BuildError::Io(format!("copying {}: {e}", artifact.display())))?;
    std::fs::rename(&tmp, dest)
        .map_err(|e| BuildError::Io(format!("renaming into {}: {e}", dest.display())))?;
    Ok(())
}

/// Signs a build record ([`xcore_security::build_record`]) for the library a build just put
/// in place in `plugin_dir`, with the host key of `runtime_dir` (made on first need): this
/// host built it from the sources the folder holds now. Returns the record's path.
pub fn record(plugin_dir: &Path, runtime_dir: &Path) -> Result<PathBuf, BuildError> {
    let m = manifest::load(plugin_dir)?.manifest;
    let key = xcore_security::host_key::load_or_create(runtime_dir)
        .map_err(|e| BuildError::Io(format!("the host key: {e}")))?;
    let library = m.entry_point.to_string_lossy().replace('\\', "/");
    xcore_security::build_record::record_build(plugin_dir, &m.name, &m.version.to_string(), &library, &key)
        .map_err(|e| BuildError::Io(format!("recording the build of {}: {e}", m.name)))?;
    Ok(plugin_dir.join(xcore_security::signing::BUILD_RECORD_FILE))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
