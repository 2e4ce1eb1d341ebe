//! RSA key pairs for plugin signing: generation, PEM files and fingerprints.
//!
//! The Python original signed plugins with an HMAC key hard-coded in `app.py`, so anyone with
//! the source could sign anything. Here the signer holds a private key (`<name>.key`, PKCS#8
//! PEM, mode 0600) and hosts trust public keys (`<name>.pub`, SPKI PEM); nothing secret lives
//! in the code or the repository.
//!
//! A key is named by its fingerprint: `sha256:` followed by the lowercase hex SHA-256 of the
//! public key's DER SubjectPublicKeyInfo, the same bytes as
//! `openssl pkey -pubin -in k.pub -outform DER | sha256sum`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
// rsa 0.10 deprecates its `RsaPrivateKey`/`RsaPublicKey` aliases; same types, old names kept here.
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use sha2::{Digest, Sha256};

/// Key size used by `xcore plugin keygen` unless told otherwise (about 128-bit security).
pub const DEFAULT_BITS: usize = 3072;
/// Smallest key size [`generate`] accepts.
pub const MIN_BITS: usize = 2048;
/// Largest key size [`generate`] accepts (the `rsa` crate's public-key limit).
pub const MAX_BITS: usize = RsaPublicKey::MAX_SIZE;

/// Errors from key handling and from signing a plugin.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("RSA key size {bits} is not supported (use {MIN_BITS} to {MAX_BITS} bits, a multiple of 8)")]
    KeySize { bits: usize },
    #[error("generating a {bits}-bit RSA key failed: {source}")]
    Generate {
        bits: usize,
        #[source]
        source: rsa::Error,
    },
    #[error("invalid key name {name:?}: use letters, digits, '.', '_' and '-', not starting with '.'")]
    KeyName { name: String },
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    Exists { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a valid {what}: {reason}", path.display())]
    KeyFormat { path: PathBuf, what: &'static str, reason: String },
    #[error("encoding the {what} failed: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("{}: is a symbolic link; plugin signing does not follow links", path.display())]
    Symlink { path: PathBuf },
    #[error("{}: is neither a regular file nor a directory", path.display())]
    SpecialFile { path: PathBuf },
    #[error("{}: this file name cannot be signed: {reason}", path.display())]
    UnsupportedPath { path: PathBuf, reason: String },
    #[error("plugin {field} {value:?} cannot be signed: {reason}")]
    InvalidField { field: &'static str, value: String, reason: String },
    #[error("RSA signing failed: {0}")]
    Sign(#[source] rsa::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SignError + '_ {
    move |source| SignError::Io { path: path.to_path_buf(), source }
}

/// Lowercase hex of `bytes` (sha2 0.11 digests no longer implement `LowerHex`).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Generates an RSA key pair with public exponent 65537 from the operating system RNG.
///
/// `bits` must be in [`MIN_BITS`]`..=`[`MAX_BITS`] and a multiple of 8. 3072 bits takes about
/// a second with an optimised `rsa`/`crypto-bigint` build and much longer in an unoptimised one.
pub fn generate(bits: usize) -> Result<(RsaPrivateKey, RsaPublicKey), SignError> {
    if !(MIN_BITS..=MAX_BITS).contains(&bits) || !bits.is_multiple_of(8) {
        return Err(SignError::KeySize { bits });
    }
    let private = RsaPrivateKey::new(&mut getrandom::SysRng, bits)
        .map_err(|source| SignError::Generate { bits, source })?;
    let public = private.to_public_key();
    Ok((private, public))
}

fn check_key_name(name: &str) -> Result<(), SignError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SignError::KeyName { name: name.to_owned() })
    }
}

/// Generates a key pair of `bits` bits and writes it to `dir` (created, mode 0700, if missing)
/// as `<name>.key` (PKCS#8 PEM, mode 0600) and `<name>.pub` (SPKI PEM, mode 0644).
///
/// Refuses, before the slow key generation, if either file already exists. Each file is written
/// to a temporary file, synced, then linked into place without replacing anything, so a crash
/// or a concurrent writer never leaves a truncated key or clobbers an existing one. Returns the
/// (private, public) paths.
pub fn write_keypair(dir: &Path, name: &str, bits: usize) -> Result<(PathBuf, PathBuf), SignError> {
    check_key_name(name)?;
    let (private_path, public_path) = keypair_paths(dir, name);
    for path in [&private_path, &public_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(SignError::Exists { path: path.clone() });
        }
    }
    let (private, _) = generate(bits)?;
    save_keypair(dir, name, &private)
}

fn keypair_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")))
}

/// Writes an existing private key and its public half like [`write_keypair`] does.
pub fn save_keypair(
    dir: &Path,
    name: &str,
    private: &RsaPrivateKey,
) -> Result<(PathBuf, PathBuf), SignError> {
    check_key_name(name)?;
    let (private_path, public_path) = keypair_paths(dir, name);
    let private_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SignError::Encode { what: "private key", reason: e.to_string() })?;
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignError::Encode { what: "public key", reason: e.to_string() })?;
    create_private_dir(dir)?;
    write_new_file(&private_path, private_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new_file(&public_path, public_pem.as_bytes(), 0o644) {
        // Leave no half-written pair behind: the private file was created by this call.
        let _ = fs::remove_file(&private_path);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((private_path, public_path))
}

/// Writes `key` as `dir/<name>.pub` (SPKI PEM, mode 0644; `dir` created if missing), never
/// replacing an existing file. Returns the path.
pub fn save_public(dir: &Path, name: &str, key: &RsaPublicKey) -> Result<PathBuf, SignError> {
    check_key_name(name)?;
    let path = dir.join(format!("{name}.pub"));
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignError::Encode { what: "public key", reason: e.to_string() })?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_new_file(&path, pem.as_bytes(), 0o644)?;
    Ok(path)
}

fn create_private_dir(dir: &Path) -> Result<(), SignError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err(dir))
}

/// Writes `bytes` to `path` through a temporary file in the same folder; never replaces an
/// existing `path`.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = write_tmp(&tmp, bytes, mode).and_then(|()| link_no_clobber(&tmp, path));
    let _ = fs::remove_file(&tmp);
    result
}

fn write_tmp(tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(tmp).map_err(io_err(tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_err(tmp))
}

fn link_no_clobber(tmp: &Path, path: &Path) -> Result<(), SignError> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SignError::Exists { path: path.into() }),
        // Filesystems without hard links: check, then rename (a small race, but no truncation).
        Err(_) => {
            if fs::symlink_metadata(path).is_ok() {
                return Err(SignError::Exists { path: path.into() });
            }
            fs::rename(tmp, path).map_err(io_err(path))
        }
    }
}

fn read_pem(path: &Path) -> Result<String, SignError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Loads a private key from a PEM file: PKCS#8 (`BEGIN PRIVATE KEY`, as written here) or
/// PKCS#1 (`BEGIN RSA PRIVATE KEY`). Encrypted keys are not supported.
pub fn load_private(path: &Path) -> Result<RsaPrivateKey, SignError> {
    let pem = read_pem(path)?;
    let key = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        RsaPrivateKey::from_pkcs1_pem(&pem).map_err(|e| e.to_string())
    } else {
        RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string())
    };
    key.map_err(|reason| SignError::KeyFormat { path: path.into(), what: "RSA private key (PEM)", reason })
}

/// Loads a public key from an SPKI PEM file (`BEGIN PUBLIC KEY`).
pub fn load_public(path: &Path) -> Result<RsaPublicKey, SignError> {
    let pem = read_pem(path)?;
    RsaPublicKey::from_public_key_pem(&pem).map_err(|e| SignError::KeyFormat {
        path: path.into(),
        what: "RSA public key (SPKI PEM)",
        reason: e.to_string(),
    })
}

/// `sha256:<hex>` of the public key's DER SubjectPublicKeyInfo.
pub fn fingerprint(key: &RsaPublicKey) -> String {
    // Encoding an in-memory RSA public key as DER cannot fail short of allocation failure; the
    // fallback (PKCS#1 fields) keeps this infallible without a panic path.
    let digest = match key.to_public_key_der() {
        Ok(der) => Sha256::digest(der.as_bytes()),
        Err(_) => {
            let mut h = Sha256::new();
            h.update(key.n_bytes());
            h.update(key.e_bytes());
            h.finalize()
        }
    };
    format!("sha256:{}", hex(&digest))
}

#[cfg(test)]
pub(crate) mod test_keys {
    use std::sync::OnceLock;

    use rsa::PrivateKey as RsaPrivateKey;

    /// One 2048-bit key per test binary: generation is the slow part of these tests, so every
    /// test shares this key (and [`other`] where a second, untrusted key is needed).
    pub(crate) fn key_a() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| super::generate(2048).expect("generate test key A").0)
    }

    pub(crate) fn other() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| super::generate(2048).expect("generate test key B").0)
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::key_a;
    use super::*;

    #[test]
    fn hex_encodes_lowercase() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn rejects_weak_or_odd_sizes() {
        for bits in [0, 1024, 2047, 2050, 16384] {
            assert!(matches!(generate(bits), Err(SignError::KeySize { .. })), "{bits}");
        }
    }

    #[test]
    fn save_load_round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let (private_path, public_path) = save_keypair(&keys, "release", key_a()).unwrap();
        assert_eq!(private_path, keys.join("release.key"));
        assert_eq!(public_path, keys.join("release.pub"));
        let private = load_private(&private_path).unwrap();
        let public = load_public(&public_path).unwrap();
        assert_eq!(&private, key_a());
        assert_eq!(public, key_a().to_public_key());
        assert!(fs::read_to_string(&private_path).unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(fs::read_to_string(&public_path).unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&private_path), 0o600);
            assert_eq!(mode(&keys), 0o700);
        }
        // No temporary files left behind.
        let mut names: Vec<_> =
            fs::read_dir(&keys).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["release.key", "release.pub"]);
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("k.pub"), "keep me").unwrap();
        // Refused before generating anything (this would take a while otherwise).
        let err = write_keypair(dir.path(), "k", DEFAULT_BITS).unwrap_err();
        assert!(matches!(&err, SignError::Exists { path } if path.ends_with("k.pub")), "{err}");
        let err = save_keypair(dir.path(), "k", key_a()).unwrap_err();
        assert!(matches!(&err, SignError::Exists { path } if path.ends_with("k.pub")), "{err}");
        assert_eq!(fs::read_to_string(dir.path().join("k.pub")).unwrap(), "keep me");
        assert!(!dir.path().join("k.key").exists(), "private half rolled back");

        let (private_path, _) = save_keypair(dir.path(), "j", key_a()).unwrap();
        let before = fs::read(&private_path).unwrap();
        assert!(matches!(save_keypair(dir.path(), "j", key_a()), Err(SignError::Exists { .. })));
        assert_eq!(fs::read(&private_path).unwrap(), before);
    }

    #[test]
    fn save_public_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let trusted = dir.path().join("trusted");
        let public = key_a().to_public_key();
        let path = save_public(&trusted, "alice", &public).unwrap();
        assert_eq!(load_public(&path).unwrap(), public);
        let err = save_public(&trusted, "alice", &public).unwrap_err();
        assert!(matches!(err, SignError::Exists { .. }), "{err}");
        assert!(matches!(save_public(&trusted, "../x", &public), Err(SignError::KeyName { .. })));
    }

    #[test]
    fn rejects_bad_key_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", ".hidden", "a/b", "../x", "a b"] {
            assert!(matches!(save_keypair(dir.path(), name, key_a()), Err(SignError::KeyName { .. })));
        }
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pub");
        fs::write(&garbage, "not a key").unwrap();
        let err = load_public(&garbage).unwrap_err();
        assert!(matches!(err, SignError::KeyFormat { .. }));
        assert!(err.to_string().contains("garbage.pub"), "{err}");
        let err = load_private(&garbage).unwrap_err();
        assert!(err.to_string().contains("garbage.pub"), "{err}");
        let missing = dir.path().join("missing.key");
        let err = load_private(&missing).unwrap_err();
        assert!(matches!(err, SignError::Io { .. }) && err.to_string().contains("missing.key"), "{err}");
        // A private key is not a public key.
        let (private_path, _) = save_keypair(dir.path(), "k", key_a()).unwrap();
        assert!(matches!(load_public(&private_path), Err(SignError::KeyFormat { .. })));
    }

    #[test]
    fn fingerprint_format_and_stability() {
        let public = key_a().to_public_key();
        let fp = fingerprint(&public);
        assert!(fp.starts_with("sha256:"));
        let hex_part = &fp["sha256:".len()..];
        assert_eq!(hex_part.len(), 64);
        assert!(hex_part.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let der = public.to_public_key_der().unwrap();
        assert_eq!(fp, format!("sha256:{}", hex(&Sha256::digest(der.as_bytes()))));
        let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
        assert_eq!(fingerprint(&RsaPublicKey::from_public_key_pem(&pem).unwrap()), fp);
    }
}
