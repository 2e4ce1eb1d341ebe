//! Maps a plugin library and checks it against the contract. With
//! `runtime/sandbox/os.rs`, one of the two modules of the host that use `unsafe`.
//!
//! Two facts shape this module (see ARCHITECTURE.md, "Invariants"):
//! - The dynamic loader caches libraries by path, and abi_stable's
//!   `RootModule::load_from_file` caches one module per interface type. To load a second
//!   plugin, or a new version of the same one, the library is copied to a unique path
//!   and loaded with `RawLibrary::load_at` + `init_root_module`, which still runs
//!   abi_stable's version and layout checks.
//! - A library is never unloaded: objects it created (boxes, strings, vtables) may
//!   outlive its instance, and dropping them after `dlclose` would crash. Each load
//!   therefore leaks one mapping, counted in [`mapped_libraries`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use thiserror::Error;
use xcore_plugin_abi::abi_stable::library::{lib_header_from_raw_library, RawLibrary};
use xcore_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr};
use xcore_plugin_abi::describe::{PluginDescription, DESCRIBE_ACTION};
use xcore_plugin_abi::ffi::PluginModuleRef;
use xcore_plugin_abi::ffi::{CallMeta, CallRequest, PluginBox};
use xcore_plugin_abi::{api_compatible, ABI_VERSION};

use xcore_manifest::Manifest;

static MAPPED: AtomicU64 = AtomicU64::new(0);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// How many library copies this process has mapped (and keeps mapped).
pub fn mapped_libraries() -> u64 {
    MAPPED.load(Ordering::Relaxed)
}

/// A library that passed every check.
#[derive(Clone, Copy)]
pub struct LoadedLibrary {
    /// Its root module.
    pub module: PluginModuleRef,
    /// The ABI version it was compiled against.
    pub api_version: &'static str,
}

/// The largest description the host reads (a sandboxed plugin sends it over its socket).
pub const MAX_DESCRIPTION_BYTES: usize = 1 << 20;

/// Parses a plugin's answer to [`DESCRIBE_ACTION`]: `None` (it does not know the action:
/// built before ABI 0.1.1, or a hand-written `call`) means no description; anything else
/// must be the JSON of a [`PluginDescription`] within [`MAX_DESCRIPTION_BYTES`].
pub fn parse_description(plugin: &str, text: Option<&[u8]>) -> Result<Option<PluginDescription>, LoadError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let invalid = |reason: String| LoadError::Description { plugin: plugin.to_string(), reason };
    if text.len() > MAX_DESCRIPTION_BYTES {
        return Err(invalid(format!(
            "{} bytes, more than the {MAX_DESCRIPTION_BYTES} the host reads",
            text.len()
        )));
    }
    serde_json::from_slice(text).map(Some).map_err(|e| invalid(format!("not the JSON of a description: {e}")))
}

/// Why a library was refused.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The manifest's `api_version` range excludes this host's contract.
    #[error(
        "plugin '{plugin}' declares api_version '{declared}' in {manifest}, but this host provides \
         the plugin ABI {host} (crate xcore-plugin-api); update the plugin's api_version and \
         rebuild it with an SDK on ABI {host}"
    )]
    ManifestApiVersion {
        /// Plugin name.
        plugin: String,
        /// The manifest's range.
        declared: String,
        /// This host's version.
        host: &'static str,
        /// The manifest path.
        manifest: PathBuf,
    },
    /// The library file is missing.
    #[error("plugin '{plugin}': library {path} not found (entry_point in plugin.yaml); build it with `xcore plugin build`")]
    Missing {
        /// Plugin name.
        plugin: String,
        /// Expected path.
        path: PathBuf,
    },
    /// Copying or mapping failed.
    /// The library is not the one whose hash the signature (or the host's build record)
    /// vouches for.
    #[error(
        "plugin '{plugin}': cannot load {path}: the library changed after its signature was checked \
         (sha256 {actual}, signed {expected}); not mapped"
    )]
    Changed { plugin: String, path: PathBuf, actual: String, expected: String },
    #[error("plugin '{plugin}': cannot load {path}: {reason}")]
    Io {
        /// Plugin name.
        plugin: String,
        /// Library path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// abi_stable refused the library (version or layout of the contract types).
    #[error(
        "plugin '{plugin}' ({path}) was built against a contract incompatible with this host \
         (plugin ABI {host}, crate xcore-plugin-api); rebuild the plugin with an SDK on ABI {host}. \
         abi_stable said: {reason}"
    )]
    Abi {
        /// Plugin name.
        plugin: String,
        /// Library path.
        path: PathBuf,
        /// This host's version.
        host: &'static str,
        /// abi_stable's explanation.
        reason: String,
    },
    /// The plugin's self-description (its action table) is malformed.
    #[error("plugin '{plugin}': its description (the action table its root module answers) is invalid: {reason}; rebuild it with the SDK")]
    Description {
        /// Plugin name.
        plugin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The library reports a contract version this host cannot serve.
    #[error(
        "plugin '{plugin}' was compiled against the plugin ABI {plugin_api}, but this host \
         provides {host}; rebuild the plugin with an SDK on ABI {host}"
    )]
    ApiVersion {
        /// Plugin name.
        plugin: String,
        /// The plugin's version.
        plugin_api: String,
        /// This host's version.
        host: &'static str,
    },
}

/// Asks a fresh plugin instance for its description ([`DESCRIBE_ACTION`]): its answer,
/// or `None` when it does not know the action (any error: a plugin built before ABI 0.1.1
/// answers `unknown_action`).
pub fn ask_description(plugin: &PluginBox) -> Option<Vec<u8>> {
    let request = CallRequest {
        action: RStr::from_str(DESCRIBE_ACTION),
        payload: RSlice::from_slice(b"{}"),
        meta: CallMeta {
            caller: RStr::from_str("host"),
            request_id: RStr::from_str(""),
            deadline_unix_ms: 0,
        },
    };
    match plugin.call(request) {
        RResult::ROk(bytes) => Some(bytes.into_vec()),
        RResult::RErr(_) => None,
    }
}

/// Checks the manifest's range against this host before touching the library.
pub fn check_manifest_api(manifest: &Manifest) -> Result<(), LoadError> {
    let host = semver::Version::parse(ABI_VERSION).expect("ABI_VERSION is semver");
    if manifest.api_version.matches(&host) {
        Ok(())
    } else {
        Err(LoadError::ManifestApiVersion {
            plugin: manifest.name.clone(),
            declared: manifest.api_version.to_string(),
            host: ABI_VERSION,
            manifest: manifest.dir.join(xcore_manifest::MANIFEST_FILE),
        })
    }
}

/// Copies the plugin's library to a unique path under `runtime_dir`, maps it, and checks
/// it. The copy is removed once mapped (the mapping keeps the inode alive), so the
/// runtime folder does not grow with reloads.
///
/// With `expected_sha256` (the library's signed hash), the private copy is hashed before
/// it is mapped and refused if it differs: a library swapped between the signature check
/// and the load is never mapped.
pub fn load(
    manifest: &Manifest,
    runtime_dir: &Path,
    expected_sha256: Option<&str>,
) -> Result<LoadedLibrary, LoadError> {
    check_manifest_api(manifest)?;
    load_path(&manifest.name, &manifest.library_path(), runtime_dir, expected_sha256)
}

/// [`load`] without the manifest: used by the sandbox worker, which gets the library
/// path from the host (the host checked the manifest's range already).
pub fn load_path(
    plugin: &str,
    src: &Path,
    runtime_dir: &Path,
    expected_sha256: Option<&str>,
) -> Result<LoadedLibrary, LoadError> {
    let src = src.to_path_buf();
    if !src.is_file() {
        return Err(LoadError::Missing { plugin: plugin.to_string(), path: src });
    }
    let io = |reason: String| LoadError::Io { plugin: plugin.to_string(), path: src.clone(), reason };

    let dir = runtime_dir.join("libs");
    std::fs::create_dir_all(&dir).map_err(|e| io(format!("creating {}: {e}", dir.display())))?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let copy = dir.join(format!("{plugin}-{}-{seq}{}", std::process::id(), std::env::consts::DLL_SUFFIX));
    std::fs::copy(&src, &copy).map_err(|e| io(format!("copying to {}: {e}", copy.display())))?;

    if let Some(expected) = expected_sha256 {
        let actual = xcore_security::digest::sha256_file(&copy)
            .map_err(|e| io(format!("hashing {}: {e}", copy.display())))?;
        if actual != expected {
            let _ = std::fs::remove_file(&copy);
            return Err(LoadError::Changed {
                plugin: plugin.to_string(),
                path: src.clone(),
                actual,
                expected: expected.to_string(),
            });
        }
    }
    let started = Instant::now();
    let raw = RawLibrary::load_at(&copy);
    // Whatever happened, the copy is no longer needed on disk.
    let _ = std::fs::remove_file(&copy);
    let raw = raw.map_err(|e| io(e.to_string()))?;
    // Never unmapped: see the module docs.
    let raw: &'static RawLibrary = Box::leak(Box::new(raw));
    MAPPED.fetch_add(1, Ordering::Relaxed);

    // SAFETY: `raw` is leaked above, so the library (and the `'static` references into it
    // that the header hands out) stays mapped for the rest of the process.
    let header = unsafe { lib_header_from_raw_library(raw) }.map_err(|e| LoadError::Abi {
        plugin: plugin.to_string(),
        path: src.clone(),
        host: ABI_VERSION,
        reason: e.to_string(),
    })?;
    let module = header.init_root_module::<PluginModuleRef>().map_err(|e| {
        let full = e.to_string();
        log::debug!(target: "xcore::loader", "abi_stable's full report for {}:\n{full}", src.display());
        LoadError::Abi {
            plugin: plugin.to_string(),
            path: src.clone(),
            host: ABI_VERSION,
            reason: summarize_abi_error(&full),
        }
    })?;
    let api_version = module.api_version()().as_str();
    if !api_compatible(ABI_VERSION, api_version) {
        return Err(LoadError::ApiVersion {
            plugin: plugin.to_string(),
            plugin_api: api_version.to_string(),
            host: ABI_VERSION,
        });
    }
    log::debug!(target: "xcore::loader", "mapped {} in {:?}", src.display(), started.elapsed());
    Ok(LoadedLibrary { module, api_version })
}

/// abi_stable's layout report dumps both type trees (hundreds of lines); the verdict is
/// in its last `Error:` paragraph. Keep that, on one line; the full report goes to the
/// debug log.
fn summarize_abi_error(full: &str) -> String {
    let tail = full.rfind("Error:").map(|i| &full[i..]).unwrap_or(full);
    let words: Vec<&str> = tail.split_whitespace().collect();
    let mut short = words.join(" ");
    if short.len() > 400 {
        let mut cut = 400;
        while !short.is_char_boundary(cut) {
            cut -= 1;
        }
        short.truncate(cut);
        short.push_str("...");
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_reports_are_cut_to_their_verdict() {
        let full = "Compared <this>:\n  --- Type Layout ---\n lots\n\nError:mismatched package\nExpected:\n    xcore-plugin-api\nFound:\n    other\n\n";
        assert_eq!(
            summarize_abi_error(full),
            "Error:mismatched package Expected: xcore-plugin-api Found: other"
        );
        assert_eq!(summarize_abi_error("short"), "short");
    }
}
