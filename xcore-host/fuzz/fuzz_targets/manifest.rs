//! `plugin.yaml` text, validated as the manifest of a folder named `plugin`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = xcore_manifest::parse_with_env(std::path::Path::new("/fuzz/plugin"), text, &|var| {
            (var == "FUZZ").then(|| "value".to_string())
        });
    }
});
