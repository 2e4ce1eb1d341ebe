//! The host's build record: `build.sig` beside `plugin.sig` in a plugin folder, signed with
//! the host's own key ([`super::host_key`]).
//!
//! A signature of sources ([`super::signing`]) leaves the built library out: bit-identical
//! builds are rare, so an author cannot vouch for the library a host builds. The host does:
//! after building the library from sources it verified (`xcore plugin add`) or from its own
//! tree (`xcore plugin build`), it records which library it built from which sources:
//!
//! ```json
//! {"format": 1, "plugin": "echo", "version": "0.1.0", "library": "libecho.so",
//!  "library_sha256": "<hex>", "sources_sha256": "<hex>", "built_at": 1764590000,
//!  "key": "sha256:<host key fingerprint>", "algorithm": "rsa-pss-sha256", "signature": "<base64>"}
//! ```
//!
//! `sources_sha256` is [`super::signing::sources_digest`] of the source files: the very list
//! an author's signature of sources carries. Every load checks, in this order: the record is
//! there, well formed, made with this host's key, authentic, for this plugin, version and
//! library, and for the sources the author signed; the loader then maps only a copy of the
//! library with `library_sha256`. The signature is RSASSA-PSS (SHA-256) over:
//!
//! ```text
//! xcore-build-record v1
//! plugin <name>
//! version <version>
//! library <path>
//! library_sha256 <hex>
//! sources_sha256 <hex>
//! built_at <unix seconds>
//! key <fingerprint>
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::keys::{self, SignError};
use super::signing::{self, BUILD_RECORD_FILE};

const DOMAIN: &str = "xcore-build-record v1";
const FORMAT: u32 = 1;
const MAX_RECORD_BYTES: u64 = 64 << 10;

/// The content of `build.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    pub format: u32,
    pub plugin: String,
    pub version: String,
    /// The library, relative to the plugin folder (the manifest's `entry_point`).
    pub library: String,
    /// SHA-256 (hex) of the library built.
    pub library_sha256: String,
    /// [`signing::sources_digest`] of the sources it was built from.
    pub sources_sha256: String,
    /// When (Unix seconds).
    pub built_at: u64,
    /// The host key's fingerprint.
    pub key: String,
    pub algorithm: String,
    /// Base64 of the RSA-PSS signature over [`BuildRecord::signed_text`].
    pub signature: String,
}

impl BuildRecord {
    /// The bytes the signature covers.
    pub fn signed_text(&self) -> Vec<u8> {
        format!(
            "{DOMAIN}\nplugin {}\nversion {}\nlibrary {}\nlibrary_sha256 {}\nsources_sha256 {}\nbuilt_at {}\nkey {}\n",
            self.plugin, self.version, self.library, self.library_sha256, self.sources_sha256, self.built_at, self.key
        )
        .into_bytes()
    }
}

/// Why a build record does not vouch for a library. Each names the record file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{}: no build record: this host did not build {library} from the signed sources; install the plugin with `xcore plugin add` or build it with `xcore plugin build`", file.display())]
    Missing { file: PathBuf, library: String },
    #[error("{}: no host key ({}) to check the build record with; build the plugin again with `xcore plugin build` or `xcore plugin add`", file.display(), key.display())]
    NoHostKey { file: PathBuf, key: PathBuf },
    #[error("{}: invalid build record: {reason}", file.display())]
    Malformed { file: PathBuf, reason: String },
    #[error("{}: made with key {fingerprint}, not this host's key", file.display())]
    OtherKey { file: PathBuf, fingerprint: String },
    #[error("{}: the build record's signature does not match its content (it was altered)", file.display())]
    BadSignature { file: PathBuf },
    #[error("{}: recorded {what} {found}, expected {expected}", file.display())]
    Mismatch { file: PathBuf, what: &'static str, found: String, expected: String },
    #[error("{}: the build record was made for other sources than the ones signed: build the plugin again", file.display())]
    OtherSources { file: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Signs and writes the record of `library` (relative path) in `plugin_dir`, built from the
/// sources `sources` (relative path → SHA-256), as plugin `name` `version`. The library is
/// hashed here. Returns the record.
pub fn write(
    plugin_dir: &Path,
    name: &str,
    version: &str,
    library: &str,
    sources: &BTreeMap<String, String>,
    host_key: &RsaPrivateKey,
) -> Result<BuildRecord, SignError> {
    let lib_path = plugin_dir.join(library);
    let library_sha256 = super::digest::sha256_file(&lib_path)
        .map_err(|source| SignError::Io { path: lib_path.clone(), source })?;
    let mut record = BuildRecord {
        format: FORMAT,
        plugin: name.to_owned(),
        version: version.to_owned(),
        library: library.to_owned(),
        library_sha256,
        sources_sha256: signing::sources_digest(sources),
        built_at: now_secs(),
        key: keys::fingerprint(&host_key.to_public_key()),
        algorithm: signing::ALGORITHM.to_owned(),
        signature: String::new(),
    };
    for (field, value) in [("name", name), ("version", version), ("entry_point", library)] {
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(SignError::InvalidField {
                field,
                value: value.to_owned(),
                reason: "it is empty or contains a control character".into(),
            });
        }
    }
    let raw = host_key.pss_sign::<Sha256>(&record.signed_text()).map_err(SignError::Sign)?;
    record.signature = base64::engine::general_purpose::STANDARD.encode(raw);
    let target = plugin_dir.join(BUILD_RECORD_FILE);
    let tmp = plugin_dir.join(format!(".{BUILD_RECORD_FILE}.{}.tmp", std::process::id()));
    let mut json = serde_json::to_string_pretty(&record)
        .map_err(|e| SignError::Encode { what: "build record", reason: e.to_string() })?;
    json.push('\n');
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(json.as_bytes())?;
        f.sync_all()
    });
    if let Err(source) = written.and_then(|()| fs::rename(&tmp, &target)) {
        let _ = fs::remove_file(&tmp);
        return Err(SignError::Io { path: target, source });
    }
    Ok(record)
}

/// Records the library a build just put at `library` in `plugin_dir`: the sources are the
/// folder's covered files now, the library left out (what a signature of sources lists).
pub fn record_build(
    plugin_dir: &Path,
    name: &str,
    version: &str,
    library: &str,
    host_key: &RsaPrivateKey,
) -> Result<BuildRecord, SignError> {
    let sources = signing::hash_tree(plugin_dir, Some(library))?;
    write(plugin_dir, name, version, library, &sources, host_key)
}

/// Reads `plugin_dir/build.sig` and checks it against the host key and what the caller
/// verified: the plugin, version, library path and the digest of the signed sources.
pub fn check(
    plugin_dir: &Path,
    name: &str,
    version: &str,
    library: &str,
    sources_sha256: &str,
    host_key: Option<&RsaPublicKey>,
    host_key_path: &Path,
) -> Result<BuildRecord, RecordError> {
    let file = plugin_dir.join(BUILD_RECORD_FILE);
    let malformed = |reason: String| RecordError::Malformed { file: file.clone(), reason };
    let meta = match fs::symlink_metadata(&file) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RecordError::Missing { file, library: library.to_owned() })
        }
        Err(source) => return Err(RecordError::Io { path: file, source }),
    };
    if !meta.is_file() {
        return Err(malformed("not a regular file".into()));
    }
    let mut text = String::new();
    File::open(&file)
        .and_then(|f| f.take(MAX_RECORD_BYTES + 1).read_to_string(&mut text))
        .map_err(|source| RecordError::Io { path: file.clone(), source })?;
    if text.len() as u64 > MAX_RECORD_BYTES {
        return Err(malformed(format!("larger than {MAX_RECORD_BYTES} bytes")));
    }
    let record: BuildRecord = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    if record.format != FORMAT || record.algorithm != signing::ALGORITHM {
        return Err(malformed(format!(
            "format {} / algorithm {:?} (this host reads format {FORMAT}, {:?})",
            record.format,
            record.algorithm,
            signing::ALGORITHM
        )));
    }
    let Some(host_key) = host_key else {
        return Err(RecordError::NoHostKey { file, key: host_key_path.to_path_buf() });
    };
    if record.key != keys::fingerprint(host_key) {
        return Err(RecordError::OtherKey { file, fingerprint: record.key });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&record.signature)
        .map_err(|e| malformed(format!("field `signature` is not base64: {e}")))?;
    if host_key.pss_verify::<Sha256>(&record.signed_text(), &raw).is_err() {
        return Err(RecordError::BadSignature { file });
    }
    for (what, found, expected) in [
        ("plugin", &record.plugin, name),
        ("version", &record.version, version),
        ("library", &record.library, library),
    ] {
        if found != expected {
            return Err(RecordError::Mismatch {
                file,
                what,
                found: found.clone(),
                expected: expected.to_owned(),
            });
        }
    }
    if record.sources_sha256 != sources_sha256 {
        return Err(RecordError::OtherSources { file });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::super::keys::test_keys::{key_a, other};
    use super::*;

    fn folder() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("plugin.yaml"), "name: x\n").unwrap();
        fs::create_dir(d.path().join("src")).unwrap();
        fs::write(d.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        fs::write(d.path().join("libx.so"), "library").unwrap();
        d
    }

    fn sources(d: &Path) -> String {
        signing::sources_digest(&signing::hash_tree(d, Some("libx.so")).unwrap())
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let d = folder();
        let p = d.path();
        let key_path = Path::new("runtime/keys/host.key");
        let host = key_a().to_public_key();
        let check_with =
            |k: Option<&RsaPublicKey>, src: &str| check(p, "x", "0.1.0", "libx.so", src, k, key_path);
        let src = sources(p);
        assert!(matches!(check_with(Some(&host), &src), Err(RecordError::Missing { .. })));
        let record = record_build(p, "x", "0.1.0", "libx.so", key_a()).unwrap();
        assert_eq!(record.library_sha256, super::super::digest::sha256_file(&p.join("libx.so")).unwrap());
        assert_eq!(check_with(Some(&host), &src).unwrap(), record);
        // No host key, another host's key.
        assert!(matches!(check_with(None, &src), Err(RecordError::NoHostKey { .. })));
        let err = check_with(Some(&other().to_public_key()), &src).unwrap_err();
        assert!(
            matches!(err, RecordError::OtherKey { .. }) && err.to_string().contains("build.sig"),
            "{err}"
        );
        // Other sources.
        assert!(matches!(check_with(Some(&host), &"0".repeat(64)), Err(RecordError::OtherSources { .. })));
        // Another plugin, version or library.
        assert!(matches!(
            check(p, "y", "0.1.0", "libx.so", &src, Some(&host), key_path),
            Err(RecordError::Mismatch { what: "plugin", .. })
        ));
        assert!(matches!(
            check(p, "x", "0.2.0", "libx.so", &src, Some(&host), key_path),
            Err(RecordError::Mismatch { what: "version", .. })
        ));
        // An edited hash.
        let file = p.join(BUILD_RECORD_FILE);
        let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        v["library_sha256"] = "1".repeat(64).into();
        fs::write(&file, v.to_string()).unwrap();
        assert!(matches!(check_with(Some(&host), &src), Err(RecordError::BadSignature { .. })));
        fs::write(&file, "{").unwrap();
        assert!(matches!(check_with(Some(&host), &src), Err(RecordError::Malformed { .. })));
    }
}
