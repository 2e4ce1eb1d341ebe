//! The sandbox protocol's frames, as either side reads them off its socket: a stream of
//! length-prefixed postcard messages, read until the first error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xcore_runtime::sandbox::protocol::{read, FromWorker, ToWorker};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    while read::<FromWorker>(&mut r, LIMIT).is_ok() {}
    let mut r = data;
    while read::<ToWorker>(&mut r, LIMIT).is_ok() {}
});
