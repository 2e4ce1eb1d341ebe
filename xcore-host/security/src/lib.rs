//! Plugin signing: RSA key pairs ([`keys`]), `plugin.sig` files ([`signing`]), the host's own
//! key ([`host_key`]) and the build records it signs ([`build_record`]).

pub mod build_record;
pub mod digest;
pub mod host_key;
pub mod keys;
pub mod signing;
