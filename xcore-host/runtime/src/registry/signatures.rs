//! The signature rule applied at every load and reload: which plugins must be signed,
//! by whom, and what a valid signature vouches for.

use super::*;

/// The signature rule the registry applies at every load and reload.
#[derive(Clone, Default)]
pub struct SignaturePolicy {
    /// Which plugins must be signed.
    pub require: RequireSignatures,
    /// The keys whose signatures of a plugin count.
    pub trusted: Arc<Vec<rsa::PublicKey>>,
    /// The host's own key ([`xcore_security::host_key`]): it vouches for build records
    /// only, never for a plugin's sources.
    pub host_key: xcore_security::host_key::HostPublicKey,
}

impl std::fmt::Debug for SignaturePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.trusted.iter().map(xcore_security::keys::fingerprint).collect();
        f.debug_struct("SignaturePolicy")
            .field("require", &self.require)
            .field("trusted", &keys)
            .field("host_key", &self.host_key)
            .finish()
    }
}

/// What a valid signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signing key's fingerprint.
    pub fingerprint: String,
    /// The SHA-256 the library must have (the copy that is mapped is checked): the author's
    /// signed hash, or the one of the host's build record.
    pub library_sha256: String,
    /// The library is the one this host built from the signed sources (a build record), not
    /// one the author's signature covers.
    pub built_by_host: bool,
    /// Whether the signature covers `plugin.yaml` (it covers every file of the folder,
    /// so it does unless the signature predates it): then it approves the manifest's
    /// permissions.
    pub covers_manifest: bool,
}

impl SignaturePolicy {
    /// Whether `m` must carry a valid signature (or, having one, is held to it).
    pub fn applies_to(&self, m: &Manifest) -> bool {
        let has_sig = m.dir.join(signing::SIGNATURE_FILE).is_file();
        let required = match self.require {
            RequireSignatures::None => return false,
            RequireSignatures::Trusted => m.execution_mode == ExecutionMode::Trusted,
            RequireSignatures::All => true,
        };
        required || has_sig
    }

    /// Checks the sources of `m`'s folder against its `plugin.sig` and the trusted keys, and
    /// that `m` was parsed from the very `plugin.yaml` that was verified. Nothing about the
    /// library: what `xcore plugin add` checks before it builds anything.
    pub fn check_sources(&self, m: &Manifest) -> Result<signing::Verified, String> {
        let entry = m.entry_point.to_string_lossy().replace('\\', "/");
        if !signing::is_covered(&entry) {
            return Err(format!(
                "plugin '{}': entry_point '{entry}' is in a folder signatures do not cover (target/, data/); \
                 put the library elsewhere in the plugin folder",
                m.name
            ));
        }
        let v = signing::verify(&m.dir, &m.name, &m.version.to_string(), &self.trusted)
            .map_err(|e| format!("plugin '{}': signature check failed: {e}", m.name))?;
        if v.hashes.get(manifest::MANIFEST_FILE) != Some(&m.source_sha256) {
            return Err(format!(
                "plugin '{}': signature check failed: {} changed while it was read (the manifest parsed \
                 is not the one signed); try again",
                m.name,
                m.manifest_path().display()
            ));
        }
        if let Some(lib) = &v.library {
            if *lib != entry {
                return Err(format!(
                    "plugin '{}': signature check failed: {} leaves out the library '{lib}', but entry_point is '{entry}'",
                    m.name,
                    m.dir.join(signing::SIGNATURE_FILE).display()
                ));
            }
        }
        Ok(v)
    }

    /// Checks `m`'s folder; `Ok(Some(..))` when a valid signature was found.
    ///
    /// The sources must be signed by a trusted key ([`Self::check_sources`]); the library
    /// must then be the one the author's signature covers or, for a signature of sources,
    /// the one this host built from them (its build record, signed with the host key).
    pub fn check(&self, m: &Manifest) -> Result<Option<Signed>, String> {
        if !self.applies_to(m) {
            return Ok(None);
        }
        let v = self.check_sources(m)?;
        let entry = m.entry_point.to_string_lossy().replace('\\', "/");
        let covers_manifest = v.hashes.contains_key(manifest::MANIFEST_FILE);
        let (library_sha256, built_by_host) = match &v.library {
            None => {
                let hash = v.hashes.get(&entry).cloned().ok_or_else(|| {
                    format!("plugin '{}': its signature does not cover its library '{entry}'", m.name)
                })?;
                (hash, false)
            }
            Some(_) => {
                let host_key =
                    self.host_key.get().map_err(|e| format!("plugin '{}': the host key: {e}", m.name))?;
                let record = xcore_security::build_record::check(
                    &m.dir,
                    &m.name,
                    &m.version.to_string(),
                    &entry,
                    &v.sources_sha256,
                    host_key,
                    &self.host_key.path(),
                )
                .map_err(|e| format!("plugin '{}': build record check failed: {e}", m.name))?;
                let lib = m.library_path();
                let actual = xcore_security::digest::sha256_file(&lib)
                    .map_err(|e| format!("plugin '{}': {}: {e}", m.name, lib.display()))?;
                if actual != record.library_sha256 {
                    return Err(format!(
                        "plugin '{}': {} is not the library this host built from its signed sources \
                         (sha256 {actual}, {} records {}); install or build it again",
                        m.name,
                        lib.display(),
                        signing::BUILD_RECORD_FILE,
                        record.library_sha256
                    ));
                }
                (record.library_sha256, true)
            }
        };
        Ok(Some(Signed { fingerprint: v.key_fingerprint, library_sha256, built_by_host, covers_manifest }))
    }
}
