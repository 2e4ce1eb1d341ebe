//! `xcore.yaml` text with `${VAR}` substitution and `XCORE__*` overrides.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let vars: BTreeMap<String, String> = [
            ("FUZZ", "value"),
            ("NESTED", "${FUZZ}"),
            ("XCORE__SERVER__PORT", "8081"),
            ("XCORE__DATABASES__DEFAULT__URL", "sqlite::memory:"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let _ = xcore_host::config::parse_with_vars("fuzz.yaml", text, &vars);
    }
});
