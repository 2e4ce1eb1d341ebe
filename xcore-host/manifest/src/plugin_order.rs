//! Load order of plugins from their `requires`: a deterministic topological sort that
//! fails only the plugins concerned (missing or mismatched requirement, cycle, or a
//! requirement that itself failed) and loads everything else.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::Manifest;

/// The result of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadPlan {
    /// Names in an order where each plugin comes after all its requirements.
    pub order: Vec<String>,
    /// Plugins that must not be loaded, with a reason, sorted by name.
    pub failed: Vec<(String, String)>,
}

/// Orders `manifests` so that requirements load first. `already_loaded` lists plugins
/// running now; they satisfy requirements but are not part of the plan. When a name is in
/// both, the manifest (the version about to be loaded) is what requirements are checked
/// against. Among plugins ready at the same time, the alphabetical first goes first.
pub fn plan(manifests: &[&Manifest], already_loaded: &[(String, semver::Version)]) -> LoadPlan {
    // Name -> manifest; a name declared twice makes every holder fail (ambiguous).
    let mut by_name: BTreeMap<&str, &Manifest> = BTreeMap::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut duplicates: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for m in manifests {
        if let Some(first) = by_name.get(m.name.as_str()) {
            duplicates
                .entry(m.name.as_str())
                .or_insert_with(|| vec![first.dir.display().to_string()])
                .push(m.dir.display().to_string());
        } else {
            by_name.insert(m.name.as_str(), m);
        }
    }
    for (name, dirs) in &duplicates {
        failed.insert(
            name.to_string(),
            format!("more than one plugin is named '{name}' ({})", dirs.join(", ")),
        );
    }
    let loaded: BTreeMap<&str, &semver::Version> =
        already_loaded.iter().map(|(n, v)| (n.as_str(), v)).collect();

    // 1. Requirements that cannot be met by anything present.
    // deps: edges to plugins of this plan only (already-loaded ones are satisfied).
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (&name, m) in &by_name {
        let mut reasons = Vec::new();
        let mut edges = BTreeSet::new();
        for req in &m.requires {
            if req.name == name {
                reasons.push("requires itself".to_string());
            } else if let Some(dep) = by_name.get(req.name.as_str()) {
                if req.version.matches(&dep.version) {
                    edges.insert(dep.name.as_str());
                } else {
                    reasons.push(format!(
                        "requires '{}' {} but version {} is installed",
                        req.name, req.version, dep.version
                    ));
                }
            } else if let Some(v) = loaded.get(req.name.as_str()) {
                if !req.version.matches(v) {
                    reasons.push(format!(
                        "requires '{}' {} but version {v} is installed",
                        req.name, req.version
                    ));
                }
            } else {
                reasons.push(format!("requires '{}' ({}), which is not installed", req.name, req.version));
            }
        }
        if !reasons.is_empty() && !failed.contains_key(name) {
            failed.insert(name.to_string(), reasons.join("; "));
        }
        deps.insert(name, edges);
    }

    // 2. Cycles: every plugin that can reach itself fails, with its own cycle spelled out.
    let mut on_cycle = BTreeSet::new();
    for &name in by_name.keys() {
        if let Some(cycle) = shortest_cycle(name, &deps) {
            on_cycle.insert(name);
            let text = format!("dependency cycle: {}", cycle.join(" -> "));
            failed.entry(name.to_string()).and_modify(|r| *r = format!("{r}; {text}")).or_insert(text);
        }
    }

    // 3. Kahn over the rest (a DAG once cycle members are out). Failure spreads to
    // dependents in the same pass, since a plugin is popped only after all its deps.
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
    for (&name, edges) in &deps {
        if on_cycle.contains(name) {
            continue;
        }
        let live: Vec<&str> = edges.iter().copied().filter(|d| !on_cycle.contains(d)).collect();
        pending.insert(name, live.len());
        for d in live {
            dependents.entry(d).or_default().push(name);
        }
    }
    let mut ready: BTreeSet<&str> = pending.iter().filter(|(_, &n)| n == 0).map(|(&k, _)| k).collect();
    let mut order = Vec::new();
    while let Some(name) = ready.pop_first() {
        if !failed.contains_key(name) {
            // Alphabetically first failed requirement, so the reason is deterministic.
            let broken = deps[name].iter().find_map(|d| failed.get(*d).map(|r| (*d, r.clone())));
            match broken {
                Some((d, reason)) => {
                    failed.insert(name.to_string(), format!("requires '{d}', which failed: {reason}"));
                }
                None => order.push(name.to_string()),
            }
        }
        for &next in dependents.get(name).map(Vec::as_slice).unwrap_or_default() {
            if let Some(n) = pending.get_mut(next) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(next);
                }
            }
        }
    }

    LoadPlan { order, failed: failed.into_iter().collect() }
}

/// The shortest path `start -> ... -> start` (BFS, alphabetical among equals), if any.
fn shortest_cycle<'a>(start: &'a str, deps: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in deps.get(node).into_iter().flatten() {
            if next == start {
                let mut path = vec![start];
                let mut cur = node;
                while cur != start {
                    path.push(cur);
                    cur = parent[cur];
                }
                path.push(start);
                // path is start, (reversed middle), start: put the middle in forward order.
                let last = path.len() - 1;
                path[1..last].reverse();
                return Some(path);
            }
            if next != start && !parent.contains_key(next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(name: &str, version: &str, requires: &[&str]) -> Manifest {
        let reqs: Vec<String> = requires.iter().map(|r| format!("'{r}'")).collect();
        let yaml =
            format!("name: {name}\nversion: {version}\napi_version: '*'\nrequires: [{}]\n", reqs.join(", "));
        crate::parse(&Path::new("plugins").join(name), &yaml).unwrap().manifest
    }

    fn run(ms: &[Manifest], loaded: &[(&str, &str)]) -> LoadPlan {
        let refs: Vec<&Manifest> = ms.iter().collect();
        let loaded: Vec<(String, semver::Version)> =
            loaded.iter().map(|(n, v)| (n.to_string(), semver::Version::parse(v).unwrap())).collect();
        plan(&refs, &loaded)
    }

    fn reason<'a>(p: &'a LoadPlan, name: &str) -> &'a str {
        &p.failed.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} not failed: {p:?}")).1
    }

    #[test]
    fn orders_dependencies_first_alphabetical_among_ready() {
        let ms = [
            manifest("web", "1.0.0", &["auth", "db"]),
            manifest("auth", "1.0.0", &["db@^1"]),
            manifest("db", "1.2.0", &[]),
            manifest("cache", "0.1.0", &[]),
            manifest("zeta", "0.1.0", &[]),
        ];
        let p = run(&ms, &[]);
        assert!(p.failed.is_empty(), "{p:?}");
        assert_eq!(p.order, ["cache", "db", "auth", "web", "zeta"]);
    }

    #[test]
    fn empty_input_gives_empty_plan() {
        assert_eq!(run(&[], &[]), LoadPlan::default());
    }

    #[test]
    fn missing_requirement_fails_only_that_plugin_and_its_dependents() {
        let ms = [
            manifest("a", "1.0.0", &["x@^0.2"]),
            manifest("b", "1.0.0", &["a"]),
            manifest("c", "1.0.0", &["b"]),
            manifest("ok", "1.0.0", &[]),
        ];
        let p = run(&ms, &[]);
        assert_eq!(p.order, ["ok"]);
        assert_eq!(reason(&p, "a"), "requires 'x' (^0.2), which is not installed");
        assert_eq!(
            reason(&p, "b"),
            "requires 'a', which failed: requires 'x' (^0.2), which is not installed"
        );
        assert!(reason(&p, "c").starts_with("requires 'b', which failed: requires 'a', which failed:"));
    }

    #[test]
    fn version_mismatch_against_plan_and_already_loaded() {
        let ms = [
            manifest("a", "1.0.0", &["x@^0.2"]),
            manifest("x", "0.1.0", &[]),
            manifest("b", "1.0.0", &["running@^2"]),
            manifest("c", "1.0.0", &["running@^1"]),
        ];
        let p = run(&ms, &[("running", "1.4.0")]);
        assert_eq!(p.order, ["c", "x"]);
        assert_eq!(reason(&p, "a"), "requires 'x' ^0.2 but version 0.1.0 is installed");
        assert_eq!(reason(&p, "b"), "requires 'running' ^2 but version 1.4.0 is installed");
    }

    #[test]
    fn already_loaded_plugins_satisfy_requirements() {
        let ms = [manifest("a", "1.0.0", &["db@^1"])];
        let p = run(&ms, &[("db", "1.0.0")]);
        assert_eq!(p.order, ["a"]);
        assert!(p.failed.is_empty());
    }

    #[test]
    fn cycles_fail_every_member_and_their_dependents_only() {
        let ms = [
            manifest("a", "1.0.0", &["b"]),
            manifest("b", "1.0.0", &["a"]),
            manifest("c", "1.0.0", &["d"]),
            manifest("d", "1.0.0", &["e"]),
            manifest("e", "1.0.0", &["c"]),
            manifest("user", "1.0.0", &["a"]),
            manifest("free", "1.0.0", &[]),
        ];
        let p = run(&ms, &[]);
        assert_eq!(p.order, ["free"]);
        assert_eq!(reason(&p, "a"), "dependency cycle: a -> b -> a");
        assert_eq!(reason(&p, "b"), "dependency cycle: b -> a -> b");
        assert_eq!(reason(&p, "c"), "dependency cycle: c -> d -> e -> c");
        assert_eq!(reason(&p, "e"), "dependency cycle: e -> c -> d -> e");
        assert_eq!(reason(&p, "user"), "requires 'a', which failed: dependency cycle: a -> b -> a");
        assert_eq!(p.failed.len(), 6);
    }

    #[test]
    fn duplicate_names_fail() {
        let mut second = manifest("a", "2.0.0", &[]);
        second.dir = Path::new("other/a").to_path_buf();
        let ms = [manifest("a", "1.0.0", &[]), second, manifest("b", "1.0.0", &["a"])];
        let p = run(&ms, &[]);
        assert!(p.order.is_empty());
        assert!(reason(&p, "a").contains("more than one plugin is named 'a'"));
        assert!(reason(&p, "b").starts_with("requires 'a', which failed"));
    }
}
