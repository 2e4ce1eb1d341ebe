//! Raw request paths against declared plugin routes. The first byte picks the method.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xcore_api::plugin_routes::match_route;
use xcore_manifest::Route;

fuzz_target!(|data: &[u8]| {
    let Some((&first, path)) = data.split_first() else { return };
    let method = ["GET", "POST", "PUT", "DELETE"][usize::from(first % 4)];
    let route =
        |method: &str, path: &str| Route { method: method.into(), path: path.into(), action: "a".into() };
    let routes = [
        route("GET", "/notes"),
        route("GET", "/notes/{id}"),
        route("POST", "/{a}/{b}/{c}"),
        route("PUT", "/x/{v}/y"),
        route("DELETE", "/"),
    ];
    if let Ok(Some((r, params))) = match_route(&routes, method, path) {
        assert!(r.method == method);
        assert!(params.values().all(|v| !v.is_empty()));
    }
});
