//! The store behaves the same on every back-end: one suite ([`suite`]) of key-value,
//! plugin-state, audit-log, job-run and plugin-migration checks runs unchanged on SQLite
//! (always, in a temporary folder) and on the PostgreSQL and MySQL/MariaDB servers of
//! `XCORE_TEST_POSTGRES_URL` / `XCORE_TEST_MYSQL_URL` (when set; skipped with a printed
//! line otherwise). Each run gets a fresh database with the host's migrations applied,
//! dropped afterwards even when a check fails. So this file is the proof that SQLite,
//! PostgreSQL and MySQL pass the same test suite.

mod common;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{json, Map, Value};
use xcore_db::dynamic::{DynamicSql, SqlError};
use xcore_db::migrate::{self, Op};
use xcore_db::store::audit::{AuditEntry, AuditQuery};
use xcore_db::store::kv::KvSet;
use xcore_db::store::retention::{Pruned, RetentionConfig};
use xcore_db::store::{now_ms, Store};
use xcore_db::with_conn;
use xcore_db::{plugin_migrations, Backend, Database, DatabaseConfig, DbError};

use common::TempDatabase;

// ---------------------------------------------------------------------------------------
// The three runs

#[test]
fn sqlite_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data/xcore.db").display());
    run(&url, Backend::Sqlite);
}

#[test]
fn postgres_passes_the_store_suite() {
    if let Some(temp) = TempDatabase::from_env("XCORE_TEST_POSTGRES_URL", Backend::Postgres) {
        run(&temp.url, Backend::Postgres);
    }
}

#[test]
fn mysql_passes_the_store_suite() {
    if let Some(temp) = TempDatabase::from_env("XCORE_TEST_MYSQL_URL", Backend::Mysql) {
        run(&temp.url, Backend::Mysql);
    }
}

/// Migrates the empty database at `url`, connects, runs the suite. The pool is dropped
/// on return (or unwind), before the caller's [`TempDatabase`] drops the database.
fn run(url: &str, backend: Backend) {
    let report = migrate::migrate("default", url, Op::Run).expect("the host migrations run");
    assert!(!report.changed.is_empty() && report.pending.is_empty(), "{report:?}");
    let cfg = DatabaseConfig { url: url.to_string(), pool_size: 8, connect_timeout_ms: 30_000 };
    let db = Arc::new(Database::connect("default", &cfg).expect("connect"));
    assert_eq!(db.backend(), backend);
    let store = Store::new(Arc::clone(&db));
    suite(&store, &db);
}

// ---------------------------------------------------------------------------------------
// The suite

/// Every check, on a freshly migrated database. Each part uses plugin names of its own,
/// and runs in an order where the purge count of the TTL checks sees no other part's
/// expired entries. The byte-exactness checks of keys and prefixes run last, so that a
/// back-end's collation difference there is reported after every other check passed.
fn suite(store: &Store, db: &Database) {
    kv_get_set_overwrite(store);
    kv_value_shapes(store);
    kv_keys_are_exact(store);
    kv_namespaces_and_delete(store);
    kv_list_prefix_is_literal(store);
    kv_list_paging(store);
    kv_ttl(store);
    kv_long_key(store);
    kv_concurrent_upserts(store);
    kv_bytes_for_the_disk_quota(store);
    kv_quota(store);
    kv_cas(store);
    kv_incr(store);
    kv_concurrent_increments_are_never_lost(store);
    plugin_state(store);
    audit_log(store);
    job_runs(store);
    retention(store);
    plugin_migrations_and_dynamic_sql(db);
    kv_keys_and_prefixes_compare_bytes(store);
}

/// Keys of a listing.
fn keys(store: &Store, plugin: &str, prefix: &str, after: Option<&str>, limit: usize) -> Vec<String> {
    store.kv_list(plugin, prefix, after, limit).unwrap().into_iter().map(|e| e.key).collect()
}

fn kv_get_set_overwrite(s: &Store) {
    assert_eq!(s.kv_get("p", "a").unwrap(), None, "absent");
    s.kv_set("p", "a", &json!({"n": 1}), None).unwrap();
    assert_eq!(s.kv_get("p", "a").unwrap(), Some(json!({"n": 1})));
    s.kv_set("p", "a", &json!({"n": 2}), None).unwrap();
    assert_eq!(s.kv_get("p", "a").unwrap(), Some(json!({"n": 2})), "overwritten");
    // The same value again: MySQL may count 0 changed rows; the set must still succeed
    // (and not fall into a duplicate-key insert).
    for _ in 0..3 {
        s.kv_set("p", "a", &json!({"n": 2}), None).unwrap();
    }
    assert_eq!(s.kv_get("p", "a").unwrap(), Some(json!({"n": 2})));
    assert_eq!(keys(s, "p", "", None, 100), ["a"], "one row, however often it was set");
}

fn kv_bytes_for_the_disk_quota(s: &Store) {
    assert_eq!(s.kv_bytes("disk-quota").unwrap(), 0);
    s.kv_set("disk-quota", "k", &json!("v"), None).unwrap();
    s.kv_set("disk-quota", "é", &json!({"ü": 1}), None).unwrap();
    // "k" + "\"v\"", "é" (2 bytes) + {"ü":1} (8 bytes): bytes, not characters.
    assert_eq!(s.kv_bytes("disk-quota").unwrap(), 1 + 3 + 2 + 8);
    assert_eq!(s.kv_bytes("disk-quota-other").unwrap(), 0, "per plugin");
}

fn kv_value_shapes(s: &Store) {
    let long_text = "x".repeat(200_000);
    let shapes = [
        json!({"a": 1, "nested": {"b": [1, 2, {"c": null}]}, "empty": {}, "s": "t"}),
        json!([1, "two", null, true, {"k": []}, [[]]]),
        json!("say \"hi\" \\ 'single' — héllo ✓ 日本語 🦀\n\ttab\u{0}nul"),
        json!(""),
        json!(42),
        json!(-9_007_199_254_740_993_i64),
        json!(u64::MAX),
        json!(2.5),
        json!(-1.0e-300),
        json!(true),
        json!(false),
        Value::Null,
        json!({}),
        json!([]),
        json!(long_text),
    ];
    for (i, v) in shapes.iter().enumerate() {
        s.kv_set("shapes", &format!("v{i:02}"), v, None).unwrap();
    }
    for (i, v) in shapes.iter().enumerate() {
        let got = s.kv_get("shapes", &format!("v{i:02}")).unwrap();
        assert_eq!(got.as_ref(), Some(v), "shape {i} round-trips through get");
    }
    let listed: Vec<Value> =
        s.kv_list("shapes", "v", None, 100).unwrap().into_iter().map(|e| e.value).collect();
    assert_eq!(listed, shapes, "and through list, in key order");
}

fn kv_keys_are_exact(s: &Store) {
    // Keys that a case-insensitive collation (MySQL's default) would make one row.
    s.kv_set("case", "Key", &json!("upper"), None).unwrap();
    s.kv_set("case", "key", &json!("lower"), None).unwrap();
    s.kv_set("case", "KEY", &json!("all upper"), None).unwrap();
    s.kv_set("case", "clé", &json!("accent"), None).unwrap();
    s.kv_set("case", "cle", &json!("plain"), None).unwrap();
    assert_eq!(s.kv_get("case", "Key").unwrap(), Some(json!("upper")));
    assert_eq!(s.kv_get("case", "key").unwrap(), Some(json!("lower")));
    assert_eq!(s.kv_get("case", "KEY").unwrap(), Some(json!("all upper")));
    assert_eq!(s.kv_get("case", "kEY").unwrap(), None);
    assert_eq!(s.kv_get("case", "clé").unwrap(), Some(json!("accent")));
    assert_eq!(s.kv_get("case", "cle").unwrap(), Some(json!("plain")));
    assert_eq!(keys(s, "case", "", None, 100), ["KEY", "Key", "cle", "clé", "key"], "byte order");
    assert!(s.kv_delete("case", "key").unwrap());
    assert_eq!(s.kv_get("case", "Key").unwrap(), Some(json!("upper")), "deleting 'key' keeps 'Key'");
    // Plugin names are exact too.
    s.kv_set("Case", "key", &json!("other plugin"), None).unwrap();
    assert_eq!(s.kv_get("case", "key").unwrap(), None);
    assert_eq!(s.kv_get("Case", "key").unwrap(), Some(json!("other plugin")));
}

fn kv_namespaces_and_delete(s: &Store) {
    s.kv_set("alpha", "shared", &json!("a"), None).unwrap();
    s.kv_set("beta", "shared", &json!("b"), None).unwrap();
    assert_eq!(s.kv_get("alpha", "shared").unwrap(), Some(json!("a")));
    assert_eq!(s.kv_get("beta", "shared").unwrap(), Some(json!("b")));
    assert_eq!(s.kv_get("gamma", "shared").unwrap(), None);
    assert_eq!(keys(s, "beta", "", None, 100), ["shared"]);
    assert!(s.kv_delete("alpha", "shared").unwrap(), "existed");
    assert!(!s.kv_delete("alpha", "shared").unwrap(), "gone");
    assert!(!s.kv_delete("alpha", "never-set").unwrap());
    assert_eq!(s.kv_get("alpha", "shared").unwrap(), None);
    assert_eq!(s.kv_get("beta", "shared").unwrap(), Some(json!("b")), "the other plugin's entry stays");
    s.kv_set("alpha", "shared", &json!("again"), None).unwrap();
    assert_eq!(s.kv_get("alpha", "shared").unwrap(), Some(json!("again")), "set after delete");
}

fn kv_list_prefix_is_literal(s: &Store) {
    // Each literal prefix has a decoy that the prefix would match if `%`, `_`, `!` or
    // `\` kept a LIKE meaning.
    for k in ["a%b:1", "a%b:2", "axb:1", "a_c:1", "abc:1", "a!d:1", "ad:1", "a\\e:1", "ae:1", "a!!:1"] {
        s.kv_set("lister", k, &json!(k), None).unwrap();
    }
    assert_eq!(keys(s, "lister", "a%b", None, 100), ["a%b:1", "a%b:2"]);
    assert_eq!(keys(s, "lister", "a%", None, 100), ["a%b:1", "a%b:2"]);
    assert_eq!(keys(s, "lister", "a_c", None, 100), ["a_c:1"]);
    assert_eq!(keys(s, "lister", "a!d", None, 100), ["a!d:1"]);
    assert_eq!(keys(s, "lister", "a!!", None, 100), ["a!!:1"]);
    assert_eq!(keys(s, "lister", "a\\e", None, 100), ["a\\e:1"]);
    assert_eq!(keys(s, "lister", "a%b:2", None, 100), ["a%b:2"], "a whole key is its own prefix");
    assert!(keys(s, "lister", "zz", None, 100).is_empty());
    assert!(keys(s, "other", "a", None, 100).is_empty(), "per plugin");
    let entries = s.kv_list("lister", "a_c", None, 100).unwrap();
    assert_eq!((entries[0].value.clone(), entries[0].expires_at), (json!("a_c:1"), None));
}

fn kv_list_paging(s: &Store) {
    let all: Vec<String> = (0..25).map(|i| format!("item:{i:02}")).collect();
    for (i, k) in all.iter().enumerate().rev() {
        s.kv_set("pager", k, &json!(i), None).unwrap();
    }
    s.kv_set("pager", "zzz", &json!("not an item"), None).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s.kv_list("pager", "item:", after.as_deref(), 10).unwrap();
        if page.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.len() <= 10);
        after = Some(page.last().unwrap().key.clone());
        for e in page {
            let i: usize = e.key["item:".len()..].parse().unwrap();
            assert_eq!(e.value, json!(i));
            seen.push(e.key);
        }
    }
    assert_eq!((pages, &seen), (3, &all), "three pages of 10, 10, 5, in key order");
    assert_eq!(keys(s, "pager", "item:", Some("item:09"), 3), ["item:10", "item:11", "item:12"]);
    assert_eq!(keys(s, "pager", "item:", Some("item:09x"), 1), ["item:10"], "after need not be a key");
    assert_eq!(keys(s, "pager", "", Some("item:24"), 10), ["zzz"]);
    assert!(keys(s, "pager", "", Some("zzz"), 10).is_empty());
}

fn kv_ttl(s: &Store) {
    s.kv_set("ttl", "short", &json!("soon gone"), Some(1)).unwrap();
    s.kv_set("ttl-other", "short", &json!("soon gone too"), Some(1)).unwrap();
    s.kv_set("ttl", "revived", &json!("old"), Some(1)).unwrap();
    s.kv_set("ttl", "zero", &json!(0), Some(0)).unwrap();
    s.kv_set("ttl", "none", &json!(null), None).unwrap();
    let before = now_ms();
    s.kv_set("ttl", "hour", &json!("later"), Some(3_600_000)).unwrap();
    let after = now_ms();
    std::thread::sleep(Duration::from_millis(30));

    assert_eq!(s.kv_get("ttl", "short").unwrap(), None, "expired: get");
    assert_eq!(s.kv_get("ttl-other", "short").unwrap(), None);
    let listed = s.kv_list("ttl", "", None, 100).unwrap();
    assert_eq!(
        listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["hour", "none", "zero"],
        "expired: list"
    );
    let hour = listed[0].expires_at.expect("a TTL sets expires_at");
    assert!((before + 3_600_000..=after + 3_600_000).contains(&hour), "{before} {hour} {after}");
    assert_eq!((listed[1].expires_at, listed[2].expires_at), (None, None), "ttl None / 0: no expiry");
    assert_eq!(s.kv_get("ttl", "zero").unwrap(), Some(json!(0)));
    assert_eq!(s.kv_get("ttl", "none").unwrap(), Some(Value::Null));
    assert_eq!(s.kv_get("ttl", "hour").unwrap(), Some(json!("later")));

    // Setting an expired key again without a TTL makes it live, with no expiry.
    s.kv_set("ttl", "revived", &json!("new"), None).unwrap();
    assert_eq!(s.kv_get("ttl", "revived").unwrap(), Some(json!("new")));
    assert_eq!(s.kv_list("ttl", "revived", None, 1).unwrap()[0].expires_at, None);

    assert_eq!(s.kv_purge_expired().unwrap(), 2, "purge removes the expired entries of every plugin");
    assert_eq!(s.kv_purge_expired().unwrap(), 0, "and nothing else");
    assert_eq!(keys(s, "ttl", "", None, 100), ["hour", "none", "revived", "zero"]);
    assert!(!s.kv_delete("ttl", "short").unwrap(), "purged");
    let rows = count(s.database(), "SELECT COUNT(*) AS n FROM plugin_kv WHERE plugin = {1}", &[json!("ttl")]);
    assert_eq!(rows, 4, "the expired row is gone from the table, not only hidden");

    // An expired entry not yet purged: delete says it did not exist, and removes it.
    s.kv_set("ttl", "short", &json!(1), Some(1)).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(!s.kv_delete("ttl", "short").unwrap());
    assert_eq!(s.kv_purge_expired().unwrap(), 0, "the delete removed the row");
}

/// Keys and prefixes compare as exact strings on every back-end: no case folding in a
/// prefix (SQLite's `LIKE` folds ASCII case by default), no trailing-space padding in a
/// key (MySQL's `PAD SPACE` collations compare "a" and "a " as equal).
fn kv_keys_and_prefixes_compare_bytes(s: &Store) {
    assert_eq!(keys(s, "lister", "A", None, 100), Vec::<String>::new(), "prefix 'A': no lower-case key");
    assert_eq!(keys(s, "case", "Ke", None, 100), ["Key"], "prefix 'Ke' matches 'Key', not 'KEY'");
    s.kv_set("pad", "a", &json!("bare"), None).unwrap();
    s.kv_set("pad", "a ", &json!("one space"), None).unwrap();
    assert_eq!(s.kv_get("pad", "a").unwrap(), Some(json!("bare")), "'a ' is not 'a'");
    assert_eq!(s.kv_get("pad", "a ").unwrap(), Some(json!("one space")));
    assert_eq!(s.kv_get("pad", "a  ").unwrap(), None);
    assert_eq!(keys(s, "pad", "", None, 10), ["a", "a "]);
}

fn kv_long_key(s: &Store) {
    let ascii = "k".repeat(511) + "!";
    let multibyte = "é".repeat(255) + "ab";
    assert_eq!((ascii.len(), multibyte.len()), (512, 512));
    for (k, v) in [(&ascii, json!("ascii")), (&multibyte, json!("multibyte"))] {
        s.kv_set("long", k, &v, None).unwrap();
        s.kv_set("long", k, &v, None).unwrap();
        assert_eq!(s.kv_get("long", k).unwrap(), Some(v));
    }
    assert_eq!(keys(s, "long", "kkk", None, 10), [ascii.as_str()]);
    assert_eq!(keys(s, "long", &ascii, None, 10), [ascii.as_str()]);
    assert_eq!(keys(s, "long", "", None, 10), [ascii.clone(), multibyte.clone()]);
    assert!(s.kv_delete("long", &ascii).unwrap());
    assert_eq!(keys(s, "long", "", None, 10), [multibyte]);
}

fn kv_concurrent_upserts(s: &Store) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 50;
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let start = &start;
            scope.spawn(move || {
                start.wait();
                for i in 0..ROUNDS {
                    let value = json!({"t": t, "i": i});
                    if let Err(e) = s.kv_set("conc", &format!("shared:{}", i % 5), &value, None) {
                        panic!("thread {t} round {i}: shared set failed: {e}");
                    }
                    if let Err(e) = s.kv_set("conc", &format!("own:{t}:{}", i % 5), &value, None) {
                        panic!("thread {t} round {i}: own set failed: {e}");
                    }
                }
            });
        }
    });
    for t in 0..THREADS {
        for j in 0..5 {
            let last = ROUNDS - 5 + j;
            assert_eq!(
                s.kv_get("conc", &format!("own:{t}:{j}")).unwrap(),
                Some(json!({"t": t, "i": last})),
                "own key {t}:{j} holds its last value"
            );
        }
    }
    for j in 0..5 {
        // The write that landed last is some thread's last write to this key.
        let v = s.kv_get("conc", &format!("shared:{j}")).unwrap().expect("shared key set");
        assert_eq!(v["i"], json!(ROUNDS - 5 + j), "shared:{j} = {v}");
        assert!(v["t"].as_u64().is_some_and(|t| t < THREADS as u64), "shared:{j} = {v}");
    }
    assert_eq!(s.kv_list("conc", "", None, 1000).unwrap().len(), 5 + THREADS * 5, "no duplicate rows");
}

fn plugin_state(s: &Store) {
    assert!(s.plugin_records().unwrap().is_empty());
    let t0 = now_ms();
    s.record_loaded("echo", "0.1.0", "trusted", None).unwrap();
    let r = s.plugin_records().unwrap();
    assert_eq!(r.len(), 1);
    let first = r[0].clone();
    assert_eq!(
        (first.name.as_str(), first.enabled, first.version.as_str(), first.mode.as_str()),
        ("echo", true, "0.1.0", "trusted")
    );
    assert_eq!((first.source.as_deref(), first.signed_by.as_deref()), (None, None));
    assert!(first.installed_at >= t0 && first.updated_at == first.installed_at, "{first:?}");
    // The same record twice (MySQL: 0 changed rows) is fine.
    s.record_loaded("echo", "0.1.0", "trusted", None).unwrap();
    assert!(s.disabled_plugins().unwrap().is_empty());

    s.set_enabled("echo", false, "9.9.9", "sandboxed").unwrap();
    s.set_enabled("echo", false, "9.9.9", "sandboxed").unwrap();
    let r = &s.plugin_records().unwrap()[0];
    assert_eq!((r.enabled, r.version.as_str(), r.mode.as_str()), (false, "0.1.0", "trusted"), "{r:?}");

    s.record_loaded("echo", "0.2.0", "sandboxed", Some("ab12")).unwrap();
    let r = &s.plugin_records().unwrap()[0];
    assert_eq!(
        (r.enabled, r.version.as_str(), r.mode.as_str(), r.signed_by.as_deref()),
        (false, "0.2.0", "sandboxed", Some("ab12")),
        "a new load keeps the operator's disable"
    );
    assert_eq!(r.installed_at, first.installed_at, "first seen is kept");
    assert!(r.updated_at >= first.updated_at);
    assert_eq!(s.disabled_plugins().unwrap(), ["echo"]);

    s.set_enabled("never-loaded", false, "1.0.0", "trusted").unwrap();
    let r = s.plugin_records().unwrap();
    assert_eq!(r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["echo", "never-loaded"]);
    assert_eq!(
        (r[1].enabled, r[1].version.as_str(), r[1].mode.as_str(), r[1].signed_by.as_deref()),
        (false, "1.0.0", "trusted", None),
        "set_enabled inserts a first record"
    );
    let mut disabled = s.disabled_plugins().unwrap();
    disabled.sort();
    assert_eq!(disabled, ["echo", "never-loaded"]);

    s.set_enabled("echo", true, "", "").unwrap();
    assert_eq!(s.disabled_plugins().unwrap(), ["never-loaded"]);
    s.record_loaded("echo", "0.3.0", "trusted", None).unwrap();
    let r = &s.plugin_records().unwrap()[0];
    assert_eq!(
        (r.enabled, r.version.as_str(), r.mode.as_str(), r.signed_by.as_deref()),
        (true, "0.3.0", "trusted", None),
        "an unsigned load clears the signer"
    );
}

fn audit_log(s: &Store) {
    let q = |action: Option<&str>, target: Option<&str>, before: Option<i64>, limit: usize| {
        let query = AuditQuery {
            action: action.map(str::to_string),
            target: target.map(str::to_string),
            before,
            limit,
        };
        s.audit_entries(&query).unwrap()
    };
    let summary = |v: &[AuditEntry]| -> Vec<(String, String)> {
        v.iter().map(|e| (e.action.clone(), e.target.clone())).collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, t)| (a.to_string(), t.to_string())).collect()
    };
    assert!(q(None, None, None, 10).is_empty());
    let t0 = now_ms();
    s.audit("admin@127.0.0.1", "load", "echo", "ok", None).unwrap();
    s.audit("admin@127.0.0.1", "unload", "echo", "error", Some("required by notes")).unwrap();
    s.audit("cli", "load", "notes", "ok", None).unwrap();
    s.audit("cli", "reload", "echo", "ok", Some("détail ✓ \"quoted\"")).unwrap();
    let t1 = now_ms();

    let all = q(None, None, None, 10);
    assert_eq!(
        summary(&all),
        pairs(&[("reload", "echo"), ("load", "notes"), ("unload", "echo"), ("load", "echo")]),
        "newest first"
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id && w[0].at >= w[1].at), "{all:?}");
    assert!(all.iter().all(|e| (t0..=t1).contains(&e.at)), "{all:?}");
    let newest = &all[0];
    assert_eq!(
        (newest.actor.as_str(), newest.outcome.as_str(), newest.detail.as_deref()),
        ("cli", "ok", Some("détail ✓ \"quoted\""))
    );
    assert_eq!((all[2].outcome.as_str(), all[2].detail.as_deref()), ("error", Some("required by notes")));
    assert_eq!(all[3].detail, None);

    assert_eq!(summary(&q(Some("load"), None, None, 10)), pairs(&[("load", "notes"), ("load", "echo")]));
    assert_eq!(
        summary(&q(None, Some("echo"), None, 10)),
        pairs(&[("reload", "echo"), ("unload", "echo"), ("load", "echo")])
    );
    assert_eq!(summary(&q(Some("load"), Some("echo"), None, 10)), pairs(&[("load", "echo")]));
    assert!(q(Some("disable"), None, None, 10).is_empty());
    assert!(q(Some("LOAD"), None, None, 10).is_empty(), "filters are exact");

    // Paging: each page starts below the previous page's last id.
    let page1 = q(None, None, None, 2);
    assert_eq!(page1, all[..2]);
    let page2 = q(None, None, Some(page1[1].id), 2);
    assert_eq!(page2, all[2..]);
    assert!(q(None, None, Some(page2[1].id), 2).is_empty());
    assert_eq!(q(None, Some("echo"), Some(all[0].id), 1), all[2..3], "paging with a filter");
    assert_eq!(q(None, None, None, 0).len(), 1, "a limit of 0 reads one");
}

fn job_runs(s: &Store) {
    assert!(s.job_history("nightly", 10).unwrap().is_empty());
    s.job_started("nightly", 1_000, "running", None).unwrap();
    s.job_started("nightly", 2_000, "skipped", Some("the previous run is still going")).unwrap();
    s.job_started("other", 1_500, "running", None).unwrap();
    let h = s.job_history("nightly", 10).unwrap();
    assert_eq!((h[1].outcome.as_str(), h[1].finished_at), ("running", None), "{h:?}");
    s.job_finished("nightly", 1_000, 1_500, "error", Some("boom")).unwrap();
    s.job_started("nightly", 3_000, "running", None).unwrap();
    s.job_finished("nightly", 3_000, 3_250, "ok", None).unwrap();

    let h = s.job_history("nightly", 10).unwrap();
    let rows: Vec<(i64, Option<i64>, &str, Option<&str>)> =
        h.iter().map(|r| (r.started_at, r.finished_at, r.outcome.as_str(), r.error.as_deref())).collect();
    assert_eq!(
        rows,
        [
            (3_000, Some(3_250), "ok", None),
            (2_000, None, "skipped", Some("the previous run is still going")),
            (1_000, Some(1_500), "error", Some("boom")),
        ],
        "newest first"
    );
    assert!(h.iter().all(|r| r.job_id == "nightly"));
    assert_eq!(h[0].to_json()["duration_ms"], json!(250));
    let limited = s.job_history("nightly", 2).unwrap();
    assert_eq!(limited.iter().map(|r| r.started_at).collect::<Vec<_>>(), [3_000, 2_000]);
    let other = s.job_history("other", 10).unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!((other[0].outcome.as_str(), other[0].finished_at), ("running", None), "untouched");
    assert!(s.job_history("missing", 10).unwrap().is_empty());
}

/// A new key past the quota is refused, an overwrite never is, expired keys do not count,
/// and concurrent inserts overshoot by at most the writers in flight.
fn kv_quota(s: &Store) {
    for i in 0..4 {
        assert_eq!(s.kv_set_within("quota", &format!("k{i}"), &json!(i), None, 4).unwrap(), KvSet::Stored);
    }
    assert_eq!(s.kv_count("quota").unwrap(), 4);
    assert_eq!(
        s.kv_set_within("quota", "k4", &json!(4), None, 4).unwrap(),
        KvSet::QuotaExceeded { count: 4 }
    );
    assert_eq!(s.kv_get("quota", "k4").unwrap(), None, "nothing stored");
    assert_eq!(s.kv_set_within("quota", "k0", &json!("again"), None, 4).unwrap(), KvSet::Stored);
    // The same values again, at once (on MySQL an update that changes nothing counts 0 rows).
    for _ in 0..3 {
        assert_eq!(s.kv_set_within("quota", "k0", &json!("again"), None, 4).unwrap(), KvSet::Stored);
    }
    assert_eq!(s.kv_get("quota", "k0").unwrap(), Some(json!("again")));
    assert_eq!(s.kv_set_within("quota-other", "k4", &json!(4), None, 4).unwrap(), KvSet::Stored);
    s.kv_set("quota", "k1", &json!(1), Some(1)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(s.kv_count("quota").unwrap(), 3, "an expired key does not count");
    assert_eq!(s.kv_set_within("quota", "k5", &json!(5), None, 4).unwrap(), KvSet::Stored);
    assert!(s.kv_delete("quota", "k1").is_ok());

    let writers = 8;
    let barrier = Arc::new(Barrier::new(writers));
    let stored: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let barrier = barrier.clone();
                scope.spawn(move || {
                    barrier.wait();
                    (0..10)
                        .filter(|i| {
                            s.kv_set_within("quota-race", &format!("w{w}-{i}"), &json!(i), None, 20).unwrap()
                                == KvSet::Stored
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let count = s.kv_count("quota-race").unwrap();
    assert_eq!(count as usize, stored);
    assert!((20..20 + writers as u64).contains(&count), "{count} keys under a quota of 20");
}

/// Retention: by age and by count, on both tables.
fn retention(s: &Store) {
    const DAY: i64 = 24 * 3600 * 1000;
    let now = now_ms();
    for (i, age_days) in [400, 40, 3, 2, 1].iter().enumerate() {
        s.job_started("retained", now - age_days * DAY, "ok", None).unwrap();
        s.job_started("retained-other", now - age_days * DAY + i as i64, "ok", None).unwrap();
    }
    let runs = |job: &str| s.job_history(job, 1000).unwrap().len();
    let before_audit = s.audit_entries(&AuditQuery { limit: 1000, ..Default::default() }).unwrap().len();
    for i in 0..6 {
        s.audit("cli", "retention", &format!("t{i}"), "ok", None).unwrap();
    }
    let cfg = RetentionConfig {
        job_runs_days: 30,
        job_runs_max_rows: 0,
        audit_log_days: 0,
        audit_log_max_rows: 3,
        interval_seconds: 1,
    };
    let pruned = s.prune(&cfg, now).unwrap();
    assert_eq!(pruned.audit_log as usize, before_audit + 3, "all but the newest 3");
    let audit = s.audit_entries(&AuditQuery { limit: 1000, ..Default::default() }).unwrap();
    assert_eq!(audit.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["t5", "t4", "t3"]);
    // 400 and 40 days old go, for both jobs; the nightly runs of the job_runs check
    // (started in 1970) too.
    assert!(pruned.job_runs >= 4, "{pruned:?}");
    assert_eq!((runs("retained"), runs("retained-other"), runs("nightly")), (3, 3, 0));
    // By count: the newest rows of the table stay, whatever their job.
    let pruned = s.prune(&RetentionConfig { job_runs_days: 0, job_runs_max_rows: 2, ..cfg }, now).unwrap();
    assert_eq!(pruned, Pruned { job_runs: 4, audit_log: 0 });
    assert_eq!(runs("retained") + runs("retained-other"), 2);
    let newest = s.job_history("retained", 10).unwrap();
    assert_eq!(newest.iter().map(|r| r.started_at).collect::<Vec<_>>(), [now - DAY]);
    // By age, on the audit log: everything is older than 0 days from a week ahead.
    let later =
        s.prune(&RetentionConfig { audit_log_days: 1, audit_log_max_rows: 0, ..cfg }, now + 7 * DAY).unwrap();
    assert_eq!(later.audit_log, 3);
    assert!(s.audit_entries(&AuditQuery { limit: 10, ..Default::default() }).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Plugin migrations and plugin SQL

/// The `n`th placeholder of the back-end (`$n` on PostgreSQL, `?` elsewhere).
fn ph(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Postgres => format!("${n}"),
        _ => "?".to_string(),
    }
}

/// `sql` with `{1}`, `{2}`... replaced by the back-end's placeholders.
fn with_placeholders(backend: Backend, sql: &str) -> String {
    (1..=9).fold(sql.to_string(), |sql, n| sql.replace(&format!("{{{n}}}"), &ph(backend, n)))
}

/// Runs a query through [`DynamicSql`].
fn query(db: &Database, sql: &str, params: &[Value]) -> Vec<Map<String, Value>> {
    let sql = with_placeholders(db.backend(), sql);
    let mut conn = db.conn().unwrap();
    with_conn!(&mut conn, c => c.query_json(&sql, params, 100, false))
        .unwrap_or_else(|e| panic!("{:?}: {sql}: {e}", db.backend()))
}

/// Runs a statement through [`DynamicSql`]; the rows affected.
fn execute(db: &Database, sql: &str, params: &[Value]) -> usize {
    let sql = with_placeholders(db.backend(), sql);
    let mut conn = db.conn().unwrap();
    with_conn!(&mut conn, c => c.execute_json(&sql, params))
        .unwrap_or_else(|e| panic!("{:?}: {sql}: {e}", db.backend()))
}

/// The single integer column `n` of a one-row query.
fn count(db: &Database, sql: &str, params: &[Value]) -> i64 {
    let rows = query(db, sql, params);
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0]["n"].as_i64().unwrap_or_else(|| panic!("not an integer: {rows:?}"))
}

fn write_migration(plugin_dir: &Path, backend: &str, version: &str, sql: &str) {
    let dir = plugin_dir.join("migrations").join(backend).join(version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("up.sql"), sql).unwrap();
}

fn plugin_migrations_and_dynamic_sql(db: &Database) {
    let backend = db.backend();
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path().join("my-shelf");
    // Written for every back-end (the other dialects' folders must be ignored), in
    // reverse order (the version decides the order, not the file system).
    let add_column = "ALTER TABLE my_shelf_items ADD COLUMN qty INTEGER NOT NULL DEFAULT 0;";
    for b in ["sqlite", "postgres", "mysql"] {
        write_migration(&dir, b, "0002_more", add_column);
    }
    write_migration(
        &dir,
        "sqlite",
        "0001_init",
        "CREATE TABLE my_shelf_items (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \
         title TEXT NOT NULL, doc TEXT);\n\
         CREATE INDEX my_shelf_items_title ON my_shelf_items (title);",
    );
    write_migration(
        &dir,
        "postgres",
        "0001_init",
        "CREATE TABLE my_shelf_items (id BIGSERIAL PRIMARY KEY, title TEXT NOT NULL, doc TEXT);\n\
         CREATE INDEX my_shelf_items_title ON my_shelf_items (title);",
    );
    write_migration(
        &dir,
        "mysql",
        "0001_init",
        "CREATE TABLE my_shelf_items (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
         title VARCHAR(255) NOT NULL, doc TEXT) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;\n\
         CREATE INDEX my_shelf_items_title ON my_shelf_items (title);",
    );

    assert_eq!(plugin_migrations::apply("my-shelf", &dir, db).unwrap(), ["0001_init", "0002_more"]);
    assert!(plugin_migrations::apply("my-shelf", &dir, db).unwrap().is_empty(), "applied once");
    let versions = query(
        db,
        "SELECT version FROM plugin_migrations WHERE plugin = {1} ORDER BY version",
        &[json!("my-shelf")],
    );
    assert_eq!(
        versions.iter().map(|r| r["version"].clone()).collect::<Vec<_>>(),
        [json!("0001_init"), json!("0002_more")]
    );

    // A migration touching a host table is refused before anything runs.
    let dialect = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::Mysql => "mysql",
    };
    write_migration(
        &dir,
        dialect,
        "0003_evil",
        "CREATE TABLE my_shelf_ok (id INTEGER);\nALTER TABLE audit_log ADD COLUMN my_shelf_x TEXT;",
    );
    let evil = format!("{dialect}/0003_evil/up.sql");
    let e = plugin_migrations::apply("my-shelf", &dir, db).unwrap_err();
    assert!(matches!(e, DbError::Migration { .. }), "{e:?}");
    let msg = e.to_string();
    for part in [evil.as_str(), "'audit_log'", "plugin 'my-shelf'", "'my_shelf_...'", "'default'"] {
        assert!(msg.contains(part), "{backend:?}: '{part}' missing from: {msg}");
    }
    assert!(query(db, "SELECT * FROM audit_log WHERE id < 0", &[]).is_empty(), "audit_log still readable");
    assert_eq!(
        count(db, "SELECT COUNT(*) AS n FROM plugin_migrations WHERE plugin = {1}", &[json!("my-shelf")]),
        2,
        "the refused migration is not recorded"
    );
    std::fs::remove_dir_all(dir.join("migrations").join(dialect).join("0003_evil")).unwrap();
    assert!(plugin_migrations::apply("my-shelf", &dir, db).unwrap().is_empty());

    // The plugin's own table through plugin SQL, parameters bound.
    let title = "Dune ' \"quoted\"; DROP TABLE my_shelf_items; -- ✓";
    let inserted = execute(
        db,
        "INSERT INTO my_shelf_items (title, qty, doc) VALUES ({1}, {2}, {3})",
        &[json!(title), json!(3), json!({"tags": ["sf", null]})],
    );
    assert_eq!(inserted, 1);
    assert_eq!(execute(db, "INSERT INTO my_shelf_items (title) VALUES ({1})", &[json!("second")]), 1);
    let rows = query(
        db,
        "SELECT id, title, qty, doc FROM my_shelf_items WHERE title = {1} AND qty > {2}",
        &[json!(title), json!(1)],
    );
    assert_eq!(
        rows.into_iter().map(Value::Object).collect::<Vec<_>>(),
        [json!({"id": 1, "title": title, "qty": 3, "doc": "{\"tags\":[\"sf\",null]}"})]
    );
    let rows = query(db, "SELECT id, title, qty, doc FROM my_shelf_items ORDER BY id", &[]);
    assert_eq!(Value::Object(rows[1].clone()), json!({"id": 2, "title": "second", "qty": 0, "doc": null}));
    assert_eq!(execute(db, "UPDATE my_shelf_items SET qty = {1} WHERE id = {2}", &[json!(7), json!(2)]), 1);
    assert_eq!(count(db, "SELECT qty AS n FROM my_shelf_items WHERE id = {1}", &[json!(2)]), 7);
    let read_only = {
        let sql = with_placeholders(backend, "SELECT COUNT(*) AS n FROM my_shelf_items WHERE qty >= {1}");
        let mut conn = db.conn().unwrap();
        with_conn!(&mut conn, c => c.query_json(&sql, &[json!(3)], 1, true)).unwrap()
    };
    assert_eq!(read_only[0]["n"], json!(2));
    let refused = {
        let sql = with_placeholders(backend, "DELETE FROM my_shelf_items WHERE id = {1}");
        let mut conn = db.conn().unwrap();
        with_conn!(&mut conn, c => c.query_json(&sql, &[json!(1)], 1, true))
    };
    assert!(matches!(refused, Err(SqlError::ReadOnly(_))), "{backend:?}: {refused:?}");
    assert_eq!(count(db, "SELECT COUNT(*) AS n FROM my_shelf_items", &[]), 2, "nothing deleted");
}

fn kv_cas(s: &Store) {
    use xcore_db::store::kv::KvCas;
    // Absent expected: creates, once.
    assert_eq!(s.kv_cas("cas", "k", None, &json!({"v": 1}), 0).unwrap(), KvCas::Swapped);
    assert_eq!(
        s.kv_cas("cas", "k", None, &json!({"v": 9}), 0).unwrap(),
        KvCas::Mismatch { current: Some(json!({"v": 1})) }
    );
    // The expected value swaps; a stale one does not and says what is there.
    assert_eq!(s.kv_cas("cas", "k", Some(&json!({"v": 1})), &json!({"v": 2}), 0).unwrap(), KvCas::Swapped);
    assert_eq!(
        s.kv_cas("cas", "k", Some(&json!({"v": 1})), &json!({"v": 3}), 0).unwrap(),
        KvCas::Mismatch { current: Some(json!({"v": 2})) }
    );
    assert_eq!(s.kv_get("cas", "k").unwrap(), Some(json!({"v": 2})));
    // Equal old and new (MySQL counts no changed row): still a swap when it matches.
    assert_eq!(s.kv_cas("cas", "k", Some(&json!({"v": 2})), &json!({"v": 2}), 0).unwrap(), KvCas::Swapped);
    assert_eq!(
        s.kv_cas("cas", "k", Some(&json!({"v": 7})), &json!({"v": 7}), 0).unwrap(),
        KvCas::Mismatch { current: Some(json!({"v": 2})) }
    );
    // Case matters (MySQL's default collations would ignore it).
    s.kv_set("cas", "s", &json!("abc"), None).unwrap();
    assert!(matches!(
        s.kv_cas("cas", "s", Some(&json!("ABC")), &json!("x"), 0).unwrap(),
        KvCas::Mismatch { .. }
    ));
    // null is a value, not absence.
    s.kv_set("cas", "n", &json!(null), None).unwrap();
    assert_eq!(
        s.kv_cas("cas", "n", None, &json!(1), 0).unwrap(),
        KvCas::Mismatch { current: Some(json!(null)) }
    );
    assert_eq!(s.kv_cas("cas", "n", Some(&json!(null)), &json!(1), 0).unwrap(), KvCas::Swapped);
    // Expecting a value of an absent key fails; an expired key is absent.
    assert_eq!(
        s.kv_cas("cas", "gone", Some(&json!(1)), &json!(2), 0).unwrap(),
        KvCas::Mismatch { current: None }
    );
    s.kv_set("cas", "ttl", &json!(1), Some(1)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        s.kv_cas("cas", "ttl", Some(&json!(1)), &json!(2), 0).unwrap(),
        KvCas::Mismatch { current: None }
    );
    assert_eq!(
        s.kv_cas("cas", "ttl", None, &json!(3), 0).unwrap(),
        KvCas::Swapped,
        "over the expired remnant"
    );
    assert_eq!(s.kv_get("cas", "ttl").unwrap(), Some(json!(3)));
    // The quota counts keys it would create, not swaps of existing ones.
    s.kv_set("cas-quota", "a", &json!(1), None).unwrap();
    assert_eq!(s.kv_cas("cas-quota", "b", None, &json!(1), 1).unwrap(), KvCas::QuotaExceeded { count: 1 });
    assert_eq!(s.kv_cas("cas-quota", "a", Some(&json!(1)), &json!(2), 1).unwrap(), KvCas::Swapped);
}

fn kv_incr(s: &Store) {
    use xcore_db::store::kv::KvIncr;
    assert_eq!(s.kv_incr("incr", "c", 1, 0).unwrap(), KvIncr::Value(1), "an absent key counts from 0");
    assert_eq!(s.kv_incr("incr", "c", 5, 0).unwrap(), KvIncr::Value(6));
    assert_eq!(s.kv_incr("incr", "c", -10, 0).unwrap(), KvIncr::Value(-4));
    assert_eq!(s.kv_get("incr", "c").unwrap(), Some(json!(-4)));
    s.kv_set("incr", "text", &json!("7"), None).unwrap();
    assert_eq!(s.kv_incr("incr", "text", 1, 0).unwrap(), KvIncr::NotInteger);
    assert_eq!(s.kv_get("incr", "text").unwrap(), Some(json!("7")), "nothing written");
    s.kv_set("incr", "big", &json!(i64::MAX), None).unwrap();
    assert_eq!(s.kv_incr("incr", "big", 1, 0).unwrap(), KvIncr::Overflow);
    assert_eq!(s.kv_incr("incr-quota", "a", 1, 1).unwrap(), KvIncr::Value(1));
    assert_eq!(s.kv_incr("incr-quota", "b", 1, 1).unwrap(), KvIncr::QuotaExceeded { count: 1 });
    assert_eq!(
        s.kv_incr("incr-quota", "a", 1, 1).unwrap(),
        KvIncr::Value(2),
        "an existing key is no new key"
    );
}

fn kv_concurrent_increments_are_never_lost(s: &Store) {
    use xcore_db::store::kv::KvIncr;
    const THREADS: usize = 8;
    const ROUNDS: usize = 25;
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let start = &start;
            scope.spawn(move || {
                start.wait();
                for i in 0..ROUNDS {
                    match s.kv_incr("conc-incr", "hits", 1, 0) {
                        Ok(KvIncr::Value(_)) => {}
                        other => panic!("thread {t} round {i}: {other:?}"),
                    }
                }
            });
        }
    });
    assert_eq!(s.kv_get("conc-incr", "hits").unwrap(), Some(json!(THREADS * ROUNDS)));
}
