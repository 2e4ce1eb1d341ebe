//! The text of a `plugin.sig` file (shape checks; the RSA check needs a key it cannot have).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = xcore_security::signing::parse_signature(std::path::Path::new("plugin.sig"), text);
    }
});
