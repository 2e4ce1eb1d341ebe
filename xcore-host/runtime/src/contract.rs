//! The manifest checked against what the plugin says it has, at every load.
//!
//! A plugin built with the SDK's `#[plugin]` macro answers its action table (see
//! `xcore_plugin_abi::describe`). A typo in plugin.yaml (a route or hook naming an action
//! the plugin does not have) then refuses the load, naming both, instead of answering 404
//! at call time. A plugin without a table (a hand-written `call`, or one built on ABI
//! 0.1.0) is trusted as before.

use xcore_manifest::Manifest;
use xcore_plugin_abi::describe::{ActionKind, PluginDescription};

/// What the check found in a manifest the plugin can serve.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Agreement {
    /// Things that work but are probably not what the author meant (logged at load).
    pub warnings: Vec<String>,
    /// `#[on(...)]` handlers that no manifest hook names and the plugin may subscribe
    /// (`events.subscribe`), as (pattern, action): the host subscribes them like hooks.
    pub subscriptions: Vec<(String, String)>,
}

/// Checks `manifest` against `description`; the error names every action the manifest
/// names and the plugin does not have, with the plugin's actions.
pub fn check(manifest: &Manifest, description: &PluginDescription) -> Result<Agreement, String> {
    let Some(actions) = description.actions.as_deref() else {
        return Ok(Agreement::default());
    };
    let name = &manifest.name;
    let file = manifest.dir.join(xcore_manifest::MANIFEST_FILE);
    let known = || {
        let mut names: Vec<&str> = actions.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        if names.is_empty() {
            "it has none".to_string()
        } else {
            format!("its actions: {}", names.join(", "))
        }
    };
    let mut missing = Vec::new();
    let mut agreement = Agreement::default();
    for (i, route) in manifest.routes.iter().enumerate() {
        let at = format!("routes[{i}] ({} {})", route.method, route.path);
        match description.action(&route.action) {
            None => missing.push(format!("{at} names action '{}'", route.action)),
            Some(a) if a.kind == ActionKind::Event => agreement.warnings.push(format!(
                "plugin '{name}': {at} calls '{}', an event handler (#[on]): it will get the route's \
                 {{params, query, body}}, not an event",
                a.name
            )),
            Some(a)
                if !a.routes.is_empty()
                    && !a.routes.iter().any(|r| r.method == route.method && r.path == route.path) =>
            {
                let declared: Vec<String> =
                    a.routes.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
                agreement.warnings.push(format!(
                    "plugin '{name}': {at} calls '{}', which the code declares for {}; its path \
                     parameters may not be the ones it reads",
                    a.name,
                    declared.join(", ")
                ));
            }
            Some(_) => {}
        }
    }
    for (i, hook) in manifest.hooks.iter().enumerate() {
        match description.action(&hook.action) {
            None => missing.push(format!("hooks[{i}] ({}) names action '{}'", hook.event, hook.action)),
            Some(a) if a.kind == ActionKind::Route => agreement.warnings.push(format!(
                "plugin '{name}': hooks[{i}] ({}) calls '{}', a route handler: it will get \
                 {{event, payload}}, not a route's {{params, query, body}}",
                hook.event, a.name
            )),
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "plugin '{name}': {} in {}, but the plugin has no such action ({}); fix the name in plugin.yaml or add the handler",
            missing.join("; "),
            file.display(),
            known()
        ));
    }
    for a in actions {
        for r in &a.routes {
            let served = manifest
                .routes
                .iter()
                .any(|m| m.action == a.name && m.method == r.method && m.path == r.path);
            if !served {
                agreement.warnings.push(format!(
                    "plugin '{name}': the code declares {} {} for '{}', but plugin.yaml has no such \
                     route, so it is not served; add it to routes",
                    r.method, r.path, a.name
                ));
            }
        }
        for pattern in &a.events {
            if let Err(e) = xcore_hooks::Pattern::new(pattern) {
                return Err(format!("plugin '{name}': #[on(\"{pattern}\")] on '{}': {e}", a.name));
            }
            let hooked = manifest.hooks.iter().any(|h| h.action == a.name && &h.event == pattern);
            if hooked {
                continue;
            }
            // A handler the code declares is a runtime subscription, not an operator's
            // hook: it needs the same permission as `Context::subscribe` (a sandboxed
            // plugin must not read every event by declaring `#[on("**")]`).
            if xcore_manifest::permissions::allowed(&manifest.permissions, "events.subscribe", pattern) {
                agreement.subscriptions.push((pattern.clone(), a.name.clone()));
            } else {
                agreement.warnings.push(format!(
                    "plugin '{name}': #[on(\"{pattern}\")] on '{}' is not subscribed: it needs the \
                     permission events.subscribe:{pattern} (granted), or a hook in plugin.yaml",
                    a.name
                ));
            }
        }
    }
    Ok(agreement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xcore_plugin_abi::describe::{ActionDescription, RouteDescription};

    fn manifest(extra: &str) -> Manifest {
        let text = format!("name: notes\nversion: 0.1.0\napi_version: '^0.1'\n{extra}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("notes");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("plugin.yaml"), text).unwrap();
        xcore_manifest::load(&dir).unwrap().manifest
    }

    fn table() -> PluginDescription {
        let action = |name: &str, kind, routes: Vec<(&str, &str)>, events: Vec<&str>| ActionDescription {
            name: name.into(),
            kind,
            routes: routes
                .into_iter()
                .map(|(m, p)| RouteDescription { method: m.into(), path: p.into() })
                .collect(),
            events: events.into_iter().map(String::from).collect(),
            ..Default::default()
        };
        PluginDescription {
            sdk_version: "0.2.0".into(),
            actions: Some(vec![
                action("create", ActionKind::Action, vec![], vec![]),
                action("get", ActionKind::Route, vec![("GET", "/notes/{id}")], vec![]),
                action("audit", ActionKind::Event, vec![], vec!["notes.*"]),
            ]),
        }
    }

    #[test]
    fn a_route_naming_a_missing_action_is_refused_naming_both() {
        let m = manifest("routes:\n  - { method: GET, path: \"/notes/{id}\", action: gett }\n");
        let e = check(&m, &table()).unwrap_err();
        assert!(e.contains("routes[0] (GET /notes/{id}) names action 'gett'"), "{e}");
        assert!(e.contains("its actions: audit, create, get"), "{e}");
        assert!(e.contains("plugin.yaml"), "{e}");
    }

    #[test]
    fn a_hook_naming_a_missing_action_is_refused() {
        let m = manifest("hooks:\n  - { event: notes.created, action: audti }\n");
        let e = check(&m, &table()).unwrap_err();
        assert!(e.contains("hooks[0] (notes.created) names action 'audti'"), "{e}");
    }

    #[test]
    fn a_matching_manifest_passes_and_unhooked_handlers_are_subscribed() {
        let routes = "routes:\n  - { method: GET, path: \"/notes/{id}\", action: get }\n";
        let m = manifest(&format!("{routes}permissions: [\"events.subscribe:notes.*\"]\n"));
        let a = check(&m, &table()).unwrap();
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        assert_eq!(a.subscriptions, vec![("notes.*".to_string(), "audit".to_string())]);
        // Without the permission, the handler is not subscribed, and the log says why.
        let a = check(&manifest(routes), &table()).unwrap();
        assert!(a.subscriptions.is_empty());
        assert!(
            a.warnings.iter().any(|w| w.contains("needs the permission events.subscribe:notes.*")),
            "{:?}",
            a.warnings
        );
        // A hook in the manifest for the same handler and pattern is not subscribed twice.
        let m = manifest(
            "routes:\n  - { method: GET, path: \"/notes/{id}\", action: get }\nhooks:\n  - { event: 'notes.*', action: audit }\n",
        );
        assert!(check(&m, &table()).unwrap().subscriptions.is_empty());
    }

    #[test]
    fn mismatches_that_still_serve_are_warnings() {
        let m = manifest(
            "routes:\n  - { method: GET, path: \"/n/{note}\", action: get }\n  - { method: POST, path: /x, action: audit }\n",
        );
        let a = check(&m, &table()).unwrap();
        let all = a.warnings.join("\n");
        assert!(all.contains("which the code declares for GET /notes/{id}"), "{all}");
        assert!(all.contains("an event handler"), "{all}");
        assert!(all.contains("plugin.yaml has no such route"), "{all}");
    }

    #[test]
    fn a_plugin_without_a_table_is_trusted() {
        let m = manifest("routes:\n  - { method: GET, path: /x, action: anything }\n");
        let d = PluginDescription { sdk_version: "0.2.0".into(), actions: None };
        assert_eq!(check(&m, &d).unwrap(), Agreement::default());
    }

    #[test]
    fn the_manifest_reserves_the_prefix_the_abi_reserves() {
        assert_eq!(xcore_manifest::RESERVED_ACTION_PREFIX, xcore_plugin_abi::describe::RESERVED_PREFIX);
        assert!(xcore_plugin_abi::describe::DESCRIBE_ACTION
            .starts_with(xcore_plugin_abi::describe::RESERVED_PREFIX));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("notes");
        std::fs::create_dir(&dir).unwrap();
        let yaml = "name: notes\nversion: 0.1.0\napi_version: '^0.1'\nroutes:\n  - { method: GET, path: /d, action: __xcore_describe }\n";
        std::fs::write(dir.join("plugin.yaml"), yaml).unwrap();
        let e = xcore_manifest::load(&dir).unwrap_err().to_string();
        assert!(e.contains("routes[0].action") && e.contains("reserved for the host"), "{e}");
    }

    #[test]
    fn an_invalid_event_pattern_is_refused() {
        let mut d = table();
        d.actions.as_mut().unwrap()[2].events = vec!["notes..x".into()];
        let e = check(&manifest(""), &d).unwrap_err();
        assert!(e.contains("#[on(\"notes..x\")]"), "{e}");
    }
}
