//! `xcore.yaml` text with `${VAR}` substitution and `XCORE__*` overrides. The input is
//! the YAML, then optionally a NUL byte and `NAME=value` lines: the environment.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (yaml, env) = text.split_once('\0').unwrap_or((text, ""));
    let mut vars: BTreeMap<String, String> = [("FUZZ", "value"), ("NESTED", "${FUZZ}")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for line in env.lines() {
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    let _ = xcore_config::parse_with_vars("fuzz.yaml", yaml, &vars);
});
