//! Plugin signing: RSA key pairs ([`keys`]), `plugin.sig` files ([`signing`]), the host's own
//! key ([`host_key`]) and the build records it signs ([`build_record`]).

pub mod build_record;
pub mod digest;
pub mod host_key;
pub mod keys;
pub mod signing;

use serde::{Deserialize, Serialize};

/// Which plugins must carry a valid signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RequireSignatures {
    /// Signatures are not checked.
    None,
    /// Trusted-tier plugins must be signed by a trusted key (a sandboxed plugin that
    /// ships a plugin.sig is checked too).
    #[default]
    Trusted,
    /// Every plugin must be signed by a trusted key.
    All,
}
