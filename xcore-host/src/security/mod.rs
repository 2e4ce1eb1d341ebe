//! Plugin signing: RSA key pairs ([`keys`]) and `plugin.sig` files ([`signing`]).

pub mod digest;
pub mod keys;
pub mod signing;
