//! Plugin signatures: `plugin.sig`, made with an RSA private key, checked against trusted
//! public keys.
//!
//! # Two kinds of signature
//!
//! - A **signature of sources** (what `xcore plugin sign` makes for a crate, a folder with a
//!   `Cargo.toml`): it covers every source file (plugin.yaml, Cargo.toml, Cargo.lock, src/,
//!   migrations/, the rest of the folder) and names, in its `library` field, the built library it
//!   leaves out. Such a library is accepted only with a build record of the host
//!   ([`super::build_record`]): the host built it itself from exactly these verified sources.
//! - A **signature of a folder** (`library` absent: a prebuilt plugin without `Cargo.toml`): it
//!   covers every file, the library included, whose signed hash the loader checks.
//!
//! # What is covered
//!
//! Every regular file under the plugin folder, recursively, except:
//! - the library named by `library` (a signature of sources);
//! - `plugin.sig` itself, the host's build record `build.sig` and the folders `data/` (the
//!   plugin's runtime data), `target/` (cargo output) and `.git/`; these five names are excluded
//!   **at the top level of the plugin folder only**, so `src/data/table.rs` is signed;
//! - build and cache leftovers at any depth: files named `*.tmp-build`, `*.tmp` or `.DS_Store`.
//!
//! Whatever is covered must be a regular file or a folder: a symbolic link, socket, FIFO or device
//! anywhere in the covered tree is refused (an error naming it), never followed. File names must be
//! UTF-8 without control characters or backslashes. The plugin folder itself may be reached
//! through a link.
//!
//! Unlike the Python original, nothing the host writes at run time (its `.pyc` files) lands in
//! the covered tree as long as the plugin keeps its state under `data/`.
//!
//! # `plugin.sig`
//!
//! ```json
//! {"format": 2, "plugin": "echo", "version": "0.1.0", "library": "libecho.so",
//!  "files": {"Cargo.toml": "<sha256 hex>", "plugin.yaml": "<sha256 hex>", "src/lib.rs": "<sha256 hex>"},
//!  "key": "sha256:<fingerprint>", "algorithm": "rsa-pss-sha256", "signature": "<base64>"}
//! ```
//!
//! `files` keys are relative paths with `/` separators, sorted by byte order. The signature is
//! RSASSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) over this canonical text, not over the JSON:
//!
//! ```text
//! xcore-plugin-signature v2
//! format 2
//! algorithm rsa-pss-sha256
//! plugin <name>
//! version <version>
//! key <fingerprint>
//! library built-by-host <path>   (a signature of sources; else: library included)
//! files <count>
//! <sha256 hex>  <path>        (one line per file, sorted)
//! ```
//!
//! Names, versions and paths may not contain control characters, so the text is unambiguous.
//! Format 1 (before signatures of sources) is refused with a hint to sign again.
//!
//! # Verification order
//!
//! [`verify`] stops at the first failure, in this order: `plugin.sig` missing ([`VerifyError::Unsigned`]),
//! unreadable or invalid ([`VerifyError::Malformed`]), key not trusted ([`VerifyError::UnknownKey`]),
//! signature not matching its content ([`VerifyError::BadSignature`]), signature authentic but
//! made for another plugin or version ([`VerifyError::WrongPlugin`]); then the folder is listed
//! (a link or special file fails here) and compared: first **removed** files, then **changed**
//! ones, then **added** ones, each in sorted path order. A file moved to another folder is
//! therefore reported as `Removed` (its old path); [`verify_report`] shows both halves.
//!
//! The cryptographic check comes before the name/version check on purpose: `WrongPlugin` is only
//! ever said of a genuine signature, and any edit of the signed fields of `plugin.sig` (including
//! its `version`) is `BadSignature`, whatever version the caller expected.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
// rsa 0.10 deprecates its `RsaPrivateKey`/`RsaPublicKey` aliases; same types, old names kept here.
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::keys::{self, SignError};

/// The signature file's name, at the top of the plugin folder.
pub const SIGNATURE_FILE: &str = "plugin.sig";
/// The `format` this module writes and reads.
pub const FORMAT: u32 = 2;
/// The only `algorithm` this module writes and accepts.
pub const ALGORITHM: &str = "rsa-pss-sha256";

const DOMAIN: &str = "xcore-plugin-signature v2";
/// The host's build record, beside `plugin.sig` ([`super::build_record`]).
pub const BUILD_RECORD_FILE: &str = "build.sig";
const EXCLUDED_TOP_LEVEL: [&str; 5] = [SIGNATURE_FILE, BUILD_RECORD_FILE, "data", "target", ".git"];
const MAX_SIG_FILE_BYTES: u64 = 16 << 20;

/// The content of `plugin.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub format: u32,
    pub plugin: String,
    pub version: String,
    /// A signature of sources: the plugin's library (relative path), a build output left out
    /// of `files` that the host builds itself. `None`: the library, if any, is in `files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// Relative path (`/` separators) → lowercase hex SHA-256 of the content.
    pub files: BTreeMap<String, String>,
    /// Fingerprint of the signing key ([`keys::fingerprint`]).
    pub key: String,
    pub algorithm: String,
    /// Base64 (standard alphabet, padded) of the RSA-PSS signature over [`Signature::signed_text`].
    pub signature: String,
}

impl Signature {
    /// The exact bytes the RSA signature covers (everything but `signature`).
    pub fn signed_text(&self) -> Vec<u8> {
        let library = match &self.library {
            Some(path) => format!("built-by-host {path}"),
            None => "included".into(),
        };
        let mut text = format!(
            "{DOMAIN}\nformat {}\nalgorithm {}\nplugin {}\nversion {}\nkey {}\nlibrary {library}\nfiles {}\n",
            self.format,
            self.algorithm,
            self.plugin,
            self.version,
            self.key,
            self.files.len()
        );
        text.push_str(&file_lines(&self.files));
        text.into_bytes()
    }
}

/// `<sha256 hex>  <path>\n` per file, in path order.
fn file_lines(files: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (path, hash) in files {
        text.push_str(hash);
        text.push_str("  ");
        text.push_str(path);
        text.push('\n');
    }
    text
}

/// The SHA-256 (hex) of a file list as it appears in the signed text: what a build record
/// ([`super::build_record`]) names as the sources a library was built from.
pub fn sources_digest(files: &BTreeMap<String, String>) -> String {
    use sha2::Digest as _;
    keys::hex(&Sha256::digest(file_lines(files).as_bytes()))
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Fingerprint of the trusted key that made the signature.
    pub key_fingerprint: String,
    /// Number of files checked.
    pub files: usize,
    /// The verified SHA-256 (hex) of every signed file, by relative path: the loader
    /// checks the library it maps against it.
    pub hashes: std::collections::BTreeMap<String, String>,
    /// A signature of sources: the library it leaves out, which needs a build record.
    pub library: Option<String>,
    /// [`sources_digest`] of `hashes`.
    pub sources_sha256: String,
}

impl Verified {
    fn new(key_fingerprint: String, sig: &Signature) -> Self {
        Verified {
            key_fingerprint,
            files: sig.files.len(),
            hashes: sig.files.clone(),
            library: sig.library.clone(),
            sources_sha256: sources_digest(&sig.files),
        }
    }
}

/// Why a plugin failed verification. Per-file variants carry the plugin folder and the relative
/// path (`/` separators).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: plugin is not signed (no {SIGNATURE_FILE})", dir.display())]
    Unsigned { dir: PathBuf },
    #[error("{}: invalid signature file: {reason}", file.display())]
    Malformed { file: PathBuf, reason: String },
    #[error(
        "{}: signature was made for plugin {found_name} {found_version}, not {expected_name} {expected_version}",
        file.display()
    )]
    WrongPlugin {
        file: PathBuf,
        expected_name: String,
        expected_version: String,
        found_name: String,
        found_version: String,
    },
    #[error("{}: signed with key {fingerprint}, which is not trusted", file.display())]
    UnknownKey { file: PathBuf, fingerprint: String },
    #[error("{}: signature does not match the signed content (plugin.sig was altered)", file.display())]
    BadSignature { file: PathBuf },
    #[error("{}: {path} changed since the plugin was signed", dir.display())]
    Changed { dir: PathBuf, path: String },
    #[error("{}: {path} is not covered by the signature (added after signing)", dir.display())]
    Added { dir: PathBuf, path: String },
    #[error("{}: {path} was signed but is missing", dir.display())]
    Removed { dir: PathBuf, path: String },
    #[error("{}: is a symbolic link; plugin signatures do not follow links", path.display())]
    Symlink { path: PathBuf },
    #[error("{}: is neither a regular file nor a directory", path.display())]
    SpecialFile { path: PathBuf },
    #[error("{}: this file name cannot be signed: {reason}", path.display())]
    UnsupportedPath { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Problems listing or reading the covered tree, shared by signing and verifying.
#[derive(Debug)]
enum TreeError {
    Io { path: PathBuf, source: io::Error },
    Symlink { path: PathBuf },
    Special { path: PathBuf },
    Name { path: PathBuf, reason: String },
}

impl From<TreeError> for SignError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::Io { path, source } => SignError::Io { path, source },
            TreeError::Symlink { path } => SignError::Symlink { path },
            TreeError::Special { path } => SignError::SpecialFile { path },
            TreeError::Name { path, reason } => SignError::UnsupportedPath { path, reason },
        }
    }
}

impl From<TreeError> for VerifyError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::Io { path, source } => VerifyError::Io { path, source },
            TreeError::Symlink { path } => VerifyError::Symlink { path },
            TreeError::Special { path } => VerifyError::SpecialFile { path },
            TreeError::Name { path, reason } => VerifyError::UnsupportedPath { path, reason },
        }
    }
}

fn is_leftover(name: &str) -> bool {
    name == ".DS_Store" || name.ends_with(".tmp") || name.ends_with(".tmp-build")
}

/// Whether a signature covers the file at `rel_path` (relative, `/` separators), by name alone.
///
/// The loader should check this for the manifest's `entry_point`: a library under `target/` or
/// `data/` is outside every signature.
pub fn is_covered(rel_path: &str) -> bool {
    let mut parts = rel_path.split('/');
    let Some(first) = parts.next() else { return false };
    if EXCLUDED_TOP_LEVEL.contains(&first) {
        return false;
    }
    let last = rel_path.rsplit('/').next().unwrap_or(first);
    !is_leftover(last) && check_rel_path(rel_path).is_ok()
}

fn check_text(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err("it is empty".into())
    } else if value.chars().any(char::is_control) {
        Err("it contains a control character".into())
    } else {
        Ok(())
    }
}

fn check_component(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("{name:?} is not a file name"));
    }
    if name.chars().any(|c| c.is_control() || c == '\\' || c == '/') {
        return Err("it contains a control character, '\\' or '/'".into());
    }
    Ok(())
}

fn check_rel_path(path: &str) -> Result<(), String> {
    path.split('/').try_for_each(check_component)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lists the covered files but `leave_out`: (relative path, absolute path), sorted by
/// relative path.
fn list_files(dir: &Path, leave_out: Option<&str>) -> Result<Vec<(String, PathBuf)>, TreeError> {
    let mut out = Vec::new();
    let mut pending = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, folder)) = pending.pop() {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TreeError::Io { path, source }
        };
        for entry in fs::read_dir(&folder).map_err(io(&folder))? {
            let entry = entry.map_err(io(&folder))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(TreeError::Name { path, reason: "it is not valid UTF-8".into() });
            };
            if prefix.is_empty() && EXCLUDED_TOP_LEVEL.contains(&name.as_str()) {
                continue;
            }
            let kind = entry.file_type().map_err(io(&path))?;
            if !kind.is_dir() && is_leftover(&name) {
                continue;
            }
            check_component(&name).map_err(|reason| TreeError::Name { path: path.clone(), reason })?;
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if kind.is_symlink() {
                return Err(TreeError::Symlink { path });
            } else if kind.is_dir() {
                pending.push((rel, path));
            } else if kind.is_file() {
                if leave_out != Some(rel.as_str()) {
                    out.push((rel, path));
                }
            } else {
                return Err(TreeError::Special { path });
            }
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Streams `path` through SHA-256; refuses a file that was swapped for a link or special file
/// after listing.
fn hash_file(path: &Path) -> Result<String, TreeError> {
    let io = |source| TreeError::Io { path: path.to_path_buf(), source };
    let meta = fs::symlink_metadata(path).map_err(io)?;
    if meta.file_type().is_symlink() {
        return Err(TreeError::Symlink { path: path.to_path_buf() });
    }
    if !meta.is_file() {
        return Err(TreeError::Special { path: path.to_path_buf() });
    }
    super::digest::sha256_file(path).map_err(io)
}

/// The SHA-256 (hex) of every covered file of `plugin_dir` but `leave_out`, by relative path.
pub fn hash_tree(plugin_dir: &Path, leave_out: Option<&str>) -> Result<BTreeMap<String, String>, SignError> {
    let mut files = BTreeMap::new();
    for (rel, path) in list_files(plugin_dir, leave_out)? {
        files.insert(rel, hash_file(&path)?);
    }
    Ok(files)
}

/// Hashes every covered file of `plugin_dir` and signs the result as plugin `name` `version`.
///
/// With `library` (a relative path), a signature of sources: that file is a build output, left
/// out whether it exists or not, and only a host build record can vouch for it.
pub fn sign(
    plugin_dir: &Path,
    name: &str,
    version: &str,
    library: Option<&str>,
    key: &RsaPrivateKey,
) -> Result<Signature, SignError> {
    for (field, value) in [("name", name), ("version", version)] {
        check_text(value).map_err(|reason| SignError::InvalidField {
            field,
            value: value.to_owned(),
            reason,
        })?;
    }
    if let Some(lib) = library {
        if !is_covered(lib) {
            return Err(SignError::InvalidField {
                field: "entry_point",
                value: lib.to_owned(),
                reason: "it is not a path a signature can name (not under target/, data/ or .git/)".into(),
            });
        }
    }
    let files = hash_tree(plugin_dir, library)?;
    let mut sig = Signature {
        format: FORMAT,
        plugin: name.to_owned(),
        version: version.to_owned(),
        library: library.map(str::to_owned),
        files,
        key: keys::fingerprint(&key.to_public_key()),
        algorithm: ALGORITHM.to_owned(),
        signature: String::new(),
    };
    let raw = key.pss_sign::<Sha256>(&sig.signed_text()).map_err(SignError::Sign)?;
    sig.signature = base64::engine::general_purpose::STANDARD.encode(raw);
    Ok(sig)
}

/// Removes from `plugin_dir` what no signature covers and a build must not see: the top-level
/// `build.sig`, `data/`, `target/` and `.git/`, build leftovers (`*.tmp`, `*.tmp-build`,
/// `.DS_Store`) at any depth and, with `library`, that file. Links are removed, never followed.
/// `plugin.sig` stays. Returns the relative paths removed, sorted.
pub fn remove_uncovered(plugin_dir: &Path, library: Option<&str>) -> io::Result<Vec<String>> {
    fn remove(path: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        if meta.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        }
    }
    let mut removed = Vec::new();
    let mut pending = vec![(String::new(), plugin_dir.to_path_buf())];
    while let Some((prefix, folder)) = pending.pop() {
        for entry in fs::read_dir(&folder)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let kind = entry.file_type()?;
            let top_excluded =
                prefix.is_empty() && name != SIGNATURE_FILE && EXCLUDED_TOP_LEVEL.contains(&name.as_str());
            if top_excluded || (!kind.is_dir() && is_leftover(&name)) || library == Some(rel.as_str()) {
                remove(&entry.path())?;
                removed.push(rel);
            } else if kind.is_dir() {
                pending.push((rel, entry.path()));
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// Writes `sig` as `plugin_dir/plugin.sig` (pretty JSON) through a temporary file and a rename,
/// replacing any previous signature. Returns the file's path.
pub fn write_signature(plugin_dir: &Path, sig: &Signature) -> Result<PathBuf, SignError> {
    let target = plugin_dir.join(SIGNATURE_FILE);
    let tmp = plugin_dir.join(format!(".{SIGNATURE_FILE}.{}.tmp", std::process::id()));
    let mut json = serde_json::to_string_pretty(sig)
        .map_err(|e| SignError::Encode { what: "signature", reason: e.to_string() })?;
    json.push('\n');
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(json.as_bytes())?;
        file.sync_all()
    };
    if let Err(source) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(SignError::Io { path: tmp, source });
    }
    if let Err(source) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(SignError::Io { path: target, source });
    }
    Ok(target)
}

/// Reads and validates `plugin.sig` (shape only, no cryptography). Returns it with the decoded
/// signature bytes.
fn read_signature(dir: &Path) -> Result<(Signature, Vec<u8>), VerifyError> {
    let file = dir.join(SIGNATURE_FILE);
    let malformed = |reason: String| VerifyError::Malformed { file: file.clone(), reason };
    let meta = match fs::symlink_metadata(&file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::Unsigned { dir: dir.into() })
        }
        Err(source) => return Err(VerifyError::Io { path: file, source }),
    };
    if meta.file_type().is_symlink() {
        return Err(VerifyError::Symlink { path: file });
    }
    if !meta.is_file() {
        return Err(malformed("not a regular file".into()));
    }
    let mut text = String::new();
    File::open(&file)
        .and_then(|f| f.take(MAX_SIG_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|source| VerifyError::Io { path: file.clone(), source })?;
    if text.len() as u64 > MAX_SIG_FILE_BYTES {
        return Err(malformed(format!("larger than {MAX_SIG_FILE_BYTES} bytes")));
    }
    parse_signature(&file, &text)
}

/// Parses and validates the text of a signature file (shape only, no cryptography);
/// `file` names it in errors. The part of [`verify`] that reads untrusted bytes, exposed
/// for the fuzz targets.
#[doc(hidden)]
pub fn parse_signature(file: &Path, text: &str) -> Result<(Signature, Vec<u8>), VerifyError> {
    let malformed = |reason: String| VerifyError::Malformed { file: file.to_path_buf(), reason };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    match value.get("format") {
        Some(v) if v.as_u64() == Some(u64::from(FORMAT)) => {}
        Some(v) => {
            return Err(malformed(format!(
                "unsupported format {v} (this host reads format {FORMAT}); sign the plugin again with `xcore plugin sign`"
            )))
        }
        None => return Err(malformed("missing field `format`".into())),
    }
    let sig: Signature = serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
    if sig.algorithm != ALGORITHM {
        return Err(malformed(format!("unsupported algorithm {:?} (expected {ALGORITHM:?})", sig.algorithm)));
    }
    for (field, value) in [("plugin", &sig.plugin), ("version", &sig.version), ("key", &sig.key)] {
        check_text(value).map_err(|reason| malformed(format!("field `{field}`: {reason}")))?;
    }
    if let Some(lib) = &sig.library {
        if !is_covered(lib) {
            return Err(malformed(format!("library {lib:?} is not a path a signature can name")));
        }
        if sig.files.contains_key(lib) {
            return Err(malformed(format!("library {lib:?} is both left out and listed in `files`")));
        }
    }
    for (path, hash) in &sig.files {
        check_rel_path(path).map_err(|reason| malformed(format!("file {path:?}: {reason}")))?;
        if !is_covered(path) {
            return Err(malformed(format!("file {path:?} is in a folder signatures do not cover")));
        }
        if !is_sha256_hex(hash) {
            return Err(malformed(format!("file {path:?}: {hash:?} is not a lowercase SHA-256 hex digest")));
        }
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&sig.signature)
        .map_err(|e| malformed(format!("field `signature` is not base64: {e}")))?;
    Ok((sig, raw))
}

/// The header checks, in order: present, well formed, trusted key, authentic, right plugin.
/// `Ok` carries the signature; the key check is also reported for [`verify_report`].
fn check_header(
    dir: &Path,
    name: &str,
    version: &str,
    trusted: &[RsaPublicKey],
) -> (Option<Signature>, KeyCheck, Result<String, VerifyError>) {
    let (sig, raw) = match read_signature(dir) {
        Ok(parsed) => parsed,
        Err(e) => return (None, KeyCheck::NotChecked, Err(e)),
    };
    let file = dir.join(SIGNATURE_FILE);
    let fingerprint = sig.key.clone();
    let Some(key) = trusted.iter().find(|k| keys::fingerprint(k) == sig.key) else {
        let err = VerifyError::UnknownKey { file, fingerprint: fingerprint.clone() };
        return (Some(sig), KeyCheck::Untrusted { fingerprint }, Err(err));
    };
    if key.pss_verify::<Sha256>(&sig.signed_text(), &raw).is_err() {
        return (Some(sig), KeyCheck::BadSignature { fingerprint }, Err(VerifyError::BadSignature { file }));
    }
    let check = KeyCheck::Valid { fingerprint: fingerprint.clone() };
    if sig.plugin != name || sig.version != version {
        let err = VerifyError::WrongPlugin {
            file,
            expected_name: name.to_owned(),
            expected_version: version.to_owned(),
            found_name: sig.plugin.clone(),
            found_version: sig.version.clone(),
        };
        return (Some(sig), check, Err(err));
    }
    (Some(sig), check, Ok(fingerprint))
}

/// Compares the folder with the signed file list. With `stop_early`, returns at the first
/// failure (in the documented order) without hashing further files.
fn compare(
    dir: &Path,
    signed: &BTreeMap<String, String>,
    leave_out: Option<&str>,
    stop_early: bool,
) -> (Vec<FileReport>, Option<VerifyError>) {
    let listing = match list_files(dir, leave_out) {
        Ok(listing) => listing,
        Err(e) => return (Vec::new(), Some(e.into())),
    };
    let present: BTreeMap<&str, &Path> =
        listing.iter().map(|(rel, path)| (rel.as_str(), path.as_path())).collect();
    let mut statuses: BTreeMap<&str, FileStatus> = BTreeMap::new();
    let mut first_removed = None;
    let mut first_changed = None;
    let mut first_added = None;

    for path in signed.keys().filter(|p| !present.contains_key(p.as_str())) {
        first_removed.get_or_insert_with(|| VerifyError::Removed { dir: dir.into(), path: path.clone() });
        statuses.insert(path, FileStatus::Removed);
    }
    if stop_early && first_removed.is_some() {
        return (Vec::new(), first_removed);
    }
    for (rel, hash) in signed {
        let Some(path) = present.get(rel.as_str()) else { continue };
        let status = match hash_file(path) {
            Ok(actual) if actual == *hash => FileStatus::Ok,
            Ok(_) => {
                first_changed
                    .get_or_insert_with(|| VerifyError::Changed { dir: dir.into(), path: rel.clone() });
                FileStatus::Changed
            }
            Err(e) => {
                let reason = match &e {
                    TreeError::Io { source, .. } => source.to_string(),
                    TreeError::Symlink { .. } => "became a symbolic link".into(),
                    TreeError::Special { .. } => "is not a regular file".into(),
                    TreeError::Name { reason, .. } => reason.clone(),
                };
                first_changed.get_or_insert_with(|| e.into());
                FileStatus::Unreadable { reason }
            }
        };
        statuses.insert(rel, status);
        if stop_early && first_changed.is_some() {
            return (Vec::new(), first_changed);
        }
    }
    for rel in present.keys().filter(|p| !signed.contains_key(**p)) {
        first_added.get_or_insert_with(|| VerifyError::Added { dir: dir.into(), path: (*rel).to_owned() });
        statuses.insert(rel, FileStatus::Added);
    }
    let files =
        statuses.into_iter().map(|(path, status)| FileReport { path: path.to_owned(), status }).collect();
    (files, first_removed.or(first_changed).or(first_added))
}

/// Checks `plugin_dir` against its `plugin.sig`: made by one of `trusted` for plugin `name`
/// `version`, and every covered file exactly as signed. See the module docs for the order of
/// the checks.
pub fn verify(
    plugin_dir: &Path,
    name: &str,
    version: &str,
    trusted: &[RsaPublicKey],
) -> Result<Verified, VerifyError> {
    let (sig, _, header) = check_header(plugin_dir, name, version, trusted);
    let key_fingerprint = header?;
    let Some(sig) = sig else { return Err(VerifyError::Unsigned { dir: plugin_dir.into() }) };
    match compare(plugin_dir, &sig.files, sig.library.as_deref(), true) {
        (_, Some(e)) => Err(e),
        (_, None) => Ok(Verified::new(key_fingerprint, &sig)),
    }
}

/// The key check of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// No readable `plugin.sig`: nothing to check.
    NotChecked,
    /// The signing key is not among the trusted keys; the signature was not checked.
    Untrusted { fingerprint: String },
    /// A trusted key, but the signature does not match the content of `plugin.sig`.
    BadSignature { fingerprint: String },
    /// A trusted key and a valid signature.
    Valid { fingerprint: String },
}

/// Per-file outcome in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    Ok,
    Changed,
    Added,
    Removed,
    /// Signed, present, but could not be read.
    Unreadable {
        reason: String,
    },
}

impl fmt::Display for FileStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileStatus::Ok => f.write_str("ok"),
            FileStatus::Changed => f.write_str("changed"),
            FileStatus::Added => f.write_str("added"),
            FileStatus::Removed => f.write_str("removed"),
            FileStatus::Unreadable { reason } => write!(f, "unreadable ({reason})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Relative path, `/` separators.
    pub path: String,
    pub status: FileStatus,
}

/// Everything `xcore plugin verify` prints.
#[derive(Debug)]
pub struct Report {
    pub dir: PathBuf,
    /// Plugin name and version as written in `plugin.sig`, if it could be read.
    pub signed_for: Option<(String, String)>,
    /// A signature of sources: the library it leaves out.
    pub library: Option<String>,
    pub key: KeyCheck,
    /// Union of signed and present files, sorted by path. Empty when `plugin.sig` is missing or
    /// malformed, or when the folder could not be listed (a link, say: see `result`). When the
    /// key is untrusted or the signature bad, the files are still compared with the (unproven)
    /// list in `plugin.sig`, for diagnosis only.
    pub files: Vec<FileReport>,
    /// Exactly what [`verify`] returns for the same folder.
    pub result: Result<Verified, VerifyError>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// Like [`verify`], but checks every file and reports each one's status.
pub fn verify_report(plugin_dir: &Path, name: &str, version: &str, trusted: &[RsaPublicKey]) -> Report {
    let (sig, key, header) = check_header(plugin_dir, name, version, trusted);
    let Some(sig) = sig else {
        let result = Err(header.err().unwrap_or_else(|| VerifyError::Unsigned { dir: plugin_dir.into() }));
        return Report {
            dir: plugin_dir.into(),
            signed_for: None,
            library: None,
            key,
            files: Vec::new(),
            result,
        };
    };
    let (files, file_error) = compare(plugin_dir, &sig.files, sig.library.as_deref(), false);
    let result = match (header, file_error) {
        (Err(e), _) | (Ok(_), Some(e)) => Err(e),
        (Ok(key_fingerprint), None) => Ok(Verified::new(key_fingerprint, &sig)),
    };
    Report {
        dir: plugin_dir.into(),
        signed_for: Some((sig.plugin, sig.version)),
        library: sig.library,
        key,
        files,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::test_keys::{key_a, other};
    use super::*;
    use sha2::Digest;

    const NAME: &str = "x";
    const VERSION: &str = "0.1.0";

    /// A plugin folder with a manifest, a "library", nested sources, runtime data and build output.
    fn plugin() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("plugin.yaml"), "name: x\nversion: 0.1.0\nentry_point: libx.so\n").unwrap();
        fs::write(p.join("libx.so"), (0..=255u8).cycle().take(200_000).collect::<Vec<_>>()).unwrap();
        fs::create_dir_all(p.join("src/data")).unwrap();
        fs::write(p.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        fs::write(p.join("src/data/table.rs"), "pub const T: u8 = 1;\n").unwrap();
        fs::create_dir_all(p.join("data")).unwrap();
        fs::write(p.join("data/state.json"), "{}").unwrap();
        fs::create_dir_all(p.join("target/release")).unwrap();
        fs::write(p.join("target/release/libx.so"), "build output").unwrap();
        fs::create_dir_all(p.join(".git")).unwrap();
        fs::write(p.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        dir
    }

    fn trusted() -> Vec<RsaPublicKey> {
        vec![key_a().to_public_key()]
    }

    fn signed_plugin() -> tempfile::TempDir {
        let dir = plugin();
        let sig = sign(dir.path(), NAME, VERSION, None, key_a()).unwrap();
        write_signature(dir.path(), &sig).unwrap();
        dir
    }

    fn check(dir: &Path) -> Result<Verified, VerifyError> {
        verify(dir, NAME, VERSION, &trusted())
    }

    fn edit_sig(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join(SIGNATURE_FILE);
        let mut value: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut value);
        fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    }

    #[test]
    fn round_trip() {
        let dir = signed_plugin();
        let verified = check(dir.path()).unwrap();
        assert_eq!(verified.key_fingerprint, keys::fingerprint(&key_a().to_public_key()));
        assert_eq!(verified.files, 4);

        let sig: Signature =
            serde_json::from_str(&fs::read_to_string(dir.path().join(SIGNATURE_FILE)).unwrap()).unwrap();
        assert_eq!(sig.format, 2);
        assert_eq!(sig.library, None);
        assert_eq!(sig.algorithm, ALGORITHM);
        assert_eq!((sig.plugin.as_str(), sig.version.as_str()), (NAME, VERSION));
        let paths: Vec<_> = sig.files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["libx.so", "plugin.yaml", "src/data/table.rs", "src/lib.rs"]);
        let expected = keys::hex(&Sha256::digest(fs::read(dir.path().join("src/lib.rs")).unwrap()));
        assert_eq!(sig.files["src/lib.rs"], expected);
        // No temporary file left over.
        assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));

        let report = verify_report(dir.path(), NAME, VERSION, &trusted());
        assert!(report.is_ok());
        assert!(matches!(report.key, KeyCheck::Valid { .. }));
        assert_eq!(report.signed_for, Some((NAME.into(), VERSION.into())));
        assert!(report.files.iter().all(|f| f.status == FileStatus::Ok));
        assert_eq!(report.files.len(), 4);
    }

    #[test]
    fn re_signing_replaces_the_signature() {
        let dir = signed_plugin();
        fs::write(dir.path().join("src/lib.rs"), "pub fn g() {}\n").unwrap();
        assert!(matches!(check(dir.path()), Err(VerifyError::Changed { .. })));
        let sig = sign(dir.path(), NAME, VERSION, None, key_a()).unwrap();
        write_signature(dir.path(), &sig).unwrap();
        check(dir.path()).unwrap();
    }

    #[test]
    fn edited_manifest_is_changed() {
        let dir = signed_plugin();
        fs::write(dir.path().join("plugin.yaml"), "name: x\nversion: 0.1.0\nentry_point: evil.so\n").unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(&err, VerifyError::Changed { path, .. } if path == "plugin.yaml"), "{err}");
        assert!(err.to_string().contains("plugin.yaml"), "{err}");
    }

    #[test]
    fn flipped_library_byte_is_changed() {
        let dir = signed_plugin();
        let lib = dir.path().join("libx.so");
        let mut bytes = fs::read(&lib).unwrap();
        bytes[150_000] ^= 0x01;
        fs::write(&lib, bytes).unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(&err, VerifyError::Changed { path, .. } if path == "libx.so"), "{err}");
    }

    #[test]
    fn added_file_is_refused() {
        let dir = signed_plugin();
        fs::write(dir.path().join("src/extra.rs"), "").unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(&err, VerifyError::Added { path, .. } if path == "src/extra.rs"), "{err}");
        // Also a compiled cache file next to the sources (the Python `.pyc` case).
        fs::remove_file(dir.path().join("src/extra.rs")).unwrap();
        fs::create_dir(dir.path().join("src/__pycache__")).unwrap();
        fs::write(dir.path().join("src/__pycache__/lib.pyc"), "").unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(
            matches!(&err, VerifyError::Added { path, .. } if path == "src/__pycache__/lib.pyc"),
            "{err}"
        );
    }

    #[test]
    fn removed_file_is_refused() {
        let dir = signed_plugin();
        fs::remove_file(dir.path().join("src/data/table.rs")).unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(&err, VerifyError::Removed { path, .. } if path == "src/data/table.rs"), "{err}");
    }

    #[test]
    fn moved_file_reports_removed_first_and_both_in_the_report() {
        let dir = signed_plugin();
        fs::create_dir(dir.path().join("lib")).unwrap();
        fs::rename(dir.path().join("src/lib.rs"), dir.path().join("lib/lib.rs")).unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(&err, VerifyError::Removed { path, .. } if path == "src/lib.rs"), "{err}");

        let report = verify_report(dir.path(), NAME, VERSION, &trusted());
        assert!(matches!(&report.result, Err(VerifyError::Removed { path, .. }) if path == "src/lib.rs"));
        let statuses: Vec<_> = report.files.iter().map(|f| (f.path.as_str(), f.status.to_string())).collect();
        assert_eq!(
            statuses,
            [
                ("lib/lib.rs", "added".to_string()),
                ("libx.so", "ok".into()),
                ("plugin.yaml", "ok".into()),
                ("src/data/table.rs", "ok".into()),
                ("src/lib.rs", "removed".into()),
            ]
        );
    }

    #[test]
    fn order_is_removed_then_changed_then_added() {
        let dir = signed_plugin();
        fs::write(dir.path().join("aaa-added"), "").unwrap();
        fs::write(dir.path().join("libx.so"), "changed").unwrap();
        fs::remove_file(dir.path().join("src/lib.rs")).unwrap();
        assert!(matches!(check(dir.path()), Err(VerifyError::Removed { .. })));
        fs::write(dir.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        assert!(matches!(check(dir.path()), Err(VerifyError::Changed { .. })));
        let report = verify_report(dir.path(), NAME, VERSION, &trusted());
        assert!(matches!(report.result, Err(VerifyError::Changed { .. })));
        assert_eq!(report.files[0], FileReport { path: "aaa-added".into(), status: FileStatus::Added });
    }

    #[test]
    fn signature_for_another_plugin_or_version() {
        let dir = plugin();
        write_signature(dir.path(), &sign(dir.path(), "other", VERSION, None, key_a()).unwrap()).unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(
            matches!(&err, VerifyError::WrongPlugin { found_name, expected_name, .. }
                if found_name == "other" && expected_name == NAME),
            "{err}"
        );
        write_signature(dir.path(), &sign(dir.path(), NAME, "0.0.9", None, key_a()).unwrap()).unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(
            matches!(&err, VerifyError::WrongPlugin { found_version, .. } if found_version == "0.0.9"),
            "{err}"
        );
        let report = verify_report(dir.path(), NAME, VERSION, &trusted());
        assert!(matches!(report.key, KeyCheck::Valid { .. }));
        assert!(matches!(report.result, Err(VerifyError::WrongPlugin { .. })));
    }

    #[test]
    fn unknown_key() {
        let dir = signed_plugin();
        let only_b = [other().to_public_key()];
        let err = verify(dir.path(), NAME, VERSION, &only_b).unwrap_err();
        let fp_a = keys::fingerprint(&key_a().to_public_key());
        assert!(matches!(&err, VerifyError::UnknownKey { fingerprint, .. } if *fingerprint == fp_a), "{err}");
        assert!(matches!(verify(dir.path(), NAME, VERSION, &[]), Err(VerifyError::UnknownKey { .. })));
        let report = verify_report(dir.path(), NAME, VERSION, &only_b);
        assert_eq!(report.key, KeyCheck::Untrusted { fingerprint: fp_a });
        // Both keys trusted: fine.
        verify(dir.path(), NAME, VERSION, &[other().to_public_key(), key_a().to_public_key()]).unwrap();
    }

    #[test]
    fn key_field_pointing_at_another_trusted_key_is_bad_signature() {
        let dir = signed_plugin();
        let fp_b = keys::fingerprint(&other().to_public_key());
        edit_sig(dir.path(), |v| v["key"] = fp_b.clone().into());
        let both = [key_a().to_public_key(), other().to_public_key()];
        assert!(matches!(verify(dir.path(), NAME, VERSION, &both), Err(VerifyError::BadSignature { .. })));
    }

    /// A hand-edited `version` is `BadSignature`, not `WrongPlugin`: the signature is checked
    /// before the name and version, so `WrongPlugin` is only reported for authentic signatures.
    #[test]
    fn hand_edited_version_is_bad_signature() {
        let dir = signed_plugin();
        edit_sig(dir.path(), |v| v["version"] = "0.2.0".into());
        // Whether the host expects the edited version (manifest edited too) ...
        let err = verify(dir.path(), NAME, "0.2.0", &trusted()).unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
        // ... or the original one.
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
        assert!(err.to_string().contains("plugin.sig"), "{err}");
        let report = verify_report(dir.path(), NAME, VERSION, &trusted());
        assert!(matches!(report.key, KeyCheck::BadSignature { .. }));
    }

    #[test]
    fn hand_edited_files_map_is_bad_signature() {
        let dir = signed_plugin();
        fs::write(dir.path().join("libx.so"), "evil").unwrap();
        let evil = keys::hex(&Sha256::digest(b"evil"));
        edit_sig(dir.path(), |v| v["files"]["libx.so"] = evil.into());
        assert!(matches!(check(dir.path()), Err(VerifyError::BadSignature { .. })));
        // Dropping an entry (to hide a file) is caught the same way.
        let dir = signed_plugin();
        edit_sig(dir.path(), |v| {
            v["files"].as_object_mut().unwrap().remove("src/lib.rs");
        });
        assert!(matches!(check(dir.path()), Err(VerifyError::BadSignature { .. })));
    }

    #[test]
    fn ignored_paths_do_not_matter() {
        let dir = signed_plugin();
        let p = dir.path();
        fs::write(p.join("data/state.json"), "{\"n\": 2}").unwrap();
        fs::write(p.join("data/new.db"), "x").unwrap();
        fs::write(p.join("target/release/libx.so"), "rebuilt").unwrap();
        fs::create_dir_all(p.join("target/debug")).unwrap();
        fs::write(p.join(".git/index"), "x").unwrap();
        fs::write(p.join("libx.so.tmp-build"), "x").unwrap();
        fs::write(p.join("src/notes.tmp"), "x").unwrap();
        fs::write(p.join(".DS_Store"), "x").unwrap();
        fs::write(p.join("src/.DS_Store"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", p.join("data/link")).unwrap();
        check(p).unwrap();
        // But a `data` folder below the top level is covered.
        fs::write(p.join("src/data/table.rs"), "pub const T: u8 = 2;\n").unwrap();
        assert!(matches!(check(p), Err(VerifyError::Changed { path, .. }) if path == "src/data/table.rs"));
    }

    #[test]
    fn coverage_rules() {
        assert!(is_covered("libx.so"));
        assert!(is_covered("src/data/x.rs"));
        assert!(!is_covered("target/release/libx.so"));
        assert!(!is_covered("data/x"));
        assert!(!is_covered(".git/HEAD"));
        assert!(!is_covered("plugin.sig"));
        assert!(!is_covered("src/x.tmp"));
        assert!(!is_covered("../x"));
        assert!(!is_covered("a//b"));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused() {
        let dir = plugin();
        let link = dir.path().join("src/link.rs");
        std::os::unix::fs::symlink("lib.rs", &link).unwrap();
        let err = sign(dir.path(), NAME, VERSION, None, key_a()).unwrap_err();
        assert!(matches!(&err, SignError::Symlink { path } if *path == link), "{err}");
        assert!(err.to_string().contains("src/link.rs"), "{err}");

        fs::remove_file(&link).unwrap();
        write_signature(dir.path(), &sign(dir.path(), NAME, VERSION, None, key_a()).unwrap()).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(&err, VerifyError::Symlink { path } if path.ends_with("etc")), "{err}");

        // A signed file replaced by a link to identical content is refused too.
        fs::remove_file(dir.path().join("etc")).unwrap();
        fs::rename(dir.path().join("src/lib.rs"), dir.path().join("data/lib.rs")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("data/lib.rs"), dir.path().join("src/lib.rs")).unwrap();
        assert!(matches!(check(dir.path()), Err(VerifyError::Symlink { .. })));
    }

    #[test]
    fn unsigned_and_malformed() {
        let dir = plugin();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(&err, VerifyError::Unsigned { dir: d } if d == dir.path()), "{err}");
        let report = verify_report(dir.path(), NAME, VERSION, &trusted());
        assert!(matches!(report.result, Err(VerifyError::Unsigned { .. })));
        assert!(report.files.is_empty() && report.key == KeyCheck::NotChecked);

        let sig_path = dir.path().join(SIGNATURE_FILE);
        fs::write(&sig_path, "{not json").unwrap();
        let err = check(dir.path()).unwrap_err();
        assert!(matches!(&err, VerifyError::Malformed { file, .. } if *file == sig_path), "{err}");

        let good = sign(dir.path(), NAME, VERSION, None, key_a()).unwrap();
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: [(&str, Edit); 10] = [
            ("format", Box::new(|v| v["format"] = 3.into())),
            ("format 1", Box::new(|v| v["format"] = 1.into())),
            ("library excluded", Box::new(|v| v["library"] = "target/libx.so".into())),
            ("library listed", Box::new(|v| v["library"] = "libx.so".into())),
            ("algorithm", Box::new(|v| v["algorithm"] = "hmac-sha256".into())),
            ("unknown field", Box::new(|v| v["mode"] = "trusted".into())),
            ("base64", Box::new(|v| v["signature"] = "***".into())),
            ("hash", Box::new(|v| v["files"]["libx.so"] = "ABC".into())),
            ("path", Box::new(|v| v["files"]["../escape"] = "0".repeat(64).into())),
            ("excluded", Box::new(|v| v["files"]["data/x"] = "0".repeat(64).into())),
        ];
        for (what, edit) in cases {
            write_signature(dir.path(), &good).unwrap();
            edit_sig(dir.path(), edit);
            let err = check(dir.path()).unwrap_err();
            assert!(matches!(err, VerifyError::Malformed { .. }), "{what}: {err}");
        }
    }

    #[test]
    fn names_that_would_break_the_signed_text_are_refused() {
        let dir = plugin();
        assert!(matches!(
            sign(dir.path(), "x\nversion 9", VERSION, None, key_a()),
            Err(SignError::InvalidField { field: "name", .. })
        ));
        assert!(matches!(sign(dir.path(), NAME, "", None, key_a()), Err(SignError::InvalidField { .. })));
        fs::write(dir.path().join("src/a\nb"), "").unwrap();
        assert!(matches!(
            sign(dir.path(), NAME, VERSION, None, key_a()),
            Err(SignError::UnsupportedPath { .. })
        ));
    }

    /// A signature of sources leaves the library out: rebuilding it (or its absence) does not
    /// matter to the signature, every other file still does, and the library's path is signed.
    #[test]
    fn a_signature_of_sources_leaves_the_library_out() {
        let dir = plugin();
        let sig = sign(dir.path(), NAME, VERSION, Some("libx.so"), key_a()).unwrap();
        assert_eq!(sig.library.as_deref(), Some("libx.so"));
        assert!(!sig.files.contains_key("libx.so"));
        assert_eq!(sig.files.len(), 3);
        write_signature(dir.path(), &sig).unwrap();
        let v = check(dir.path()).unwrap();
        assert_eq!(v.library.as_deref(), Some("libx.so"));
        assert_eq!(v.sources_sha256, sources_digest(&hash_tree(dir.path(), Some("libx.so")).unwrap()));
        fs::write(dir.path().join("libx.so"), "rebuilt").unwrap();
        check(dir.path()).unwrap();
        fs::remove_file(dir.path().join("libx.so")).unwrap();
        check(dir.path()).unwrap();
        fs::write(dir.path().join("src/lib.rs"), "pub fn evil() {}\n").unwrap();
        assert!(matches!(check(dir.path()), Err(VerifyError::Changed { path, .. }) if path == "src/lib.rs"));
        // The left-out path is signed: pointing it at a source file is BadSignature.
        let dir = plugin();
        write_signature(dir.path(), &sign(dir.path(), NAME, VERSION, Some("libx.so"), key_a()).unwrap())
            .unwrap();
        edit_sig(dir.path(), |v| v["library"] = "src/data/table.rs".into());
        edit_sig(dir.path(), |v| {
            v["files"].as_object_mut().unwrap().remove("src/data/table.rs");
        });
        assert!(matches!(check(dir.path()), Err(VerifyError::BadSignature { .. })));
        // So is dropping it (the signature claims to cover the library then).
        let dir = plugin();
        write_signature(dir.path(), &sign(dir.path(), NAME, VERSION, Some("libx.so"), key_a()).unwrap())
            .unwrap();
        edit_sig(dir.path(), |v| {
            v.as_object_mut().unwrap().remove("library");
        });
        assert!(matches!(check(dir.path()), Err(VerifyError::BadSignature { .. })));
        // A library under target/ cannot be named.
        assert!(matches!(
            sign(dir.path(), NAME, VERSION, Some("target/libx.so"), key_a()),
            Err(SignError::InvalidField { .. })
        ));
    }

    #[test]
    fn remove_uncovered_clears_what_no_signature_covers() {
        let dir = signed_plugin();
        let p = dir.path();
        fs::write(p.join("build.sig"), "{}").unwrap();
        fs::write(p.join("src/old.tmp"), "x").unwrap();
        let removed = remove_uncovered(p, Some("libx.so")).unwrap();
        assert_eq!(removed, [".git", "build.sig", "data", "libx.so", "src/old.tmp", "target"]);
        assert!(p.join(SIGNATURE_FILE).is_file() && p.join("src/data/table.rs").is_file());
        assert_eq!(remove_uncovered(p, Some("libx.so")).unwrap(), Vec::<String>::new());
    }
}
