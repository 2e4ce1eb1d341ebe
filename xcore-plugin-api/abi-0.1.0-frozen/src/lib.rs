//! The ABI of 0.1.0, frozen (see Cargo.toml). Only the part a plugin's root module needs.

pub mod ffi;

/// The version a plugin built on this copy reports.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
