//! The trusted tier: plugins in the host process.
//!
//! [`loader`] maps a library (from a private copy) and checks it against the contract;
//! [`instance`] runs one plugin instance on persistent worker threads and applies
//! deadlines to calls.

pub mod instance;
pub mod loader;
