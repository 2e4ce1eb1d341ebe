//! The host's own key pair, which signs its build records ([`super::build_record`]).
//!
//! Made on first need (by `xcore plugin add` or `xcore plugin build`) as
//! `<plugins.runtime_dir>/keys/host.key` (PKCS#8 PEM, mode 0600, in a folder of mode 0700)
//! and `host.pub`; never in the repository or the trusted-keys folder. Its public half
//! vouches for build records only: it is never one of the keys whose signatures of a
//! plugin's sources count.

use std::path::{Path, PathBuf};

use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};

use super::keys::{self, SignError};

/// The key's base name.
pub const NAME: &str = "host";

/// Where the host keeps its key pair: `<runtime_dir>/keys`.
pub fn dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("keys")
}

/// The private key's path.
pub fn private_path(runtime_dir: &Path) -> PathBuf {
    dir(runtime_dir).join(format!("{NAME}.key"))
}

/// Loads the host key, generating it first when there is none. A key being written by a
/// concurrent process is waited for by loading it after losing the race.
pub fn load_or_create(runtime_dir: &Path) -> Result<RsaPrivateKey, SignError> {
    let path = private_path(runtime_dir);
    if path.is_file() {
        return keys::load_private(&path);
    }
    match keys::write_keypair(&dir(runtime_dir), NAME, keys::DEFAULT_BITS) {
        Ok((private, _)) => keys::load_private(&private),
        // Another process made it meanwhile (its files appear complete, through a link).
        Err(SignError::Exists { .. }) if path.is_file() => keys::load_private(&path),
        Err(e) => Err(e),
    }
}

/// The public half of the host key, when there is one (read from the private key, the
/// authoritative file).
pub fn public(runtime_dir: &Path) -> Result<Option<RsaPublicKey>, SignError> {
    let path = private_path(runtime_dir);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(keys::load_private(&path)?.to_public_key()))
}

/// The host key's public half as the server checks build records with it: read from
/// `runtime_dir` the first time a record is checked (the key may be made after the server
/// started, by `xcore plugin add`), then kept.
#[derive(Clone, Default)]
pub struct HostPublicKey {
    runtime_dir: PathBuf,
    key: std::sync::Arc<std::sync::OnceLock<RsaPublicKey>>,
}

impl HostPublicKey {
    /// The host key of `runtime_dir`.
    pub fn at(runtime_dir: &Path) -> Self {
        HostPublicKey { runtime_dir: runtime_dir.to_path_buf(), key: Default::default() }
    }

    /// The key, `None` while there is none.
    pub fn get(&self) -> Result<Option<&RsaPublicKey>, SignError> {
        if let Some(k) = self.key.get() {
            return Ok(Some(k));
        }
        match public(&self.runtime_dir)? {
            Some(k) => Ok(Some(self.key.get_or_init(|| k))),
            None => Ok(None),
        }
    }

    /// Where the private key is (or will be).
    pub fn path(&self) -> PathBuf {
        private_path(&self.runtime_dir)
    }
}

impl std::fmt::Debug for HostPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPublicKey")
            .field("path", &self.path())
            .field("fingerprint", &self.key.get().map(keys::fingerprint))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_with_private_modes_then_reused() {
        let d = tempfile::tempdir().unwrap();
        let runtime = d.path().join("runtime");
        assert!(public(&runtime).unwrap().is_none());
        let first = load_or_create(&runtime).unwrap();
        let again = load_or_create(&runtime).unwrap();
        assert_eq!(first, again);
        assert_eq!(public(&runtime).unwrap(), Some(first.to_public_key()));
        // The server's view: none before, the key once made.
        let later = tempfile::tempdir().unwrap();
        let host = HostPublicKey::at(later.path());
        assert!(host.get().unwrap().is_none());
        let made = load_or_create(later.path()).unwrap();
        assert_eq!(host.get().unwrap(), Some(&made.to_public_key()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&private_path(&runtime)), 0o600);
            assert_eq!(mode(&dir(&runtime)), 0o700);
        }
    }
}
