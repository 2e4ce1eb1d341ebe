//! bookmarks' unit tests, through the test kit: its SQL (its own migrations on the
//! host's SQLite layout), visit counts in the key-value store, the cache, its cron job.

use serde_json::json;
use xcore_plugin_bookmarks::Bookmarks;
use xcore_plugin_testkit::TestHost;

fn kit() -> TestHost {
    TestHost::from_dir(env!("CARGO_MANIFEST_DIR")).expect("plugin.yaml")
}

#[test]
fn add_visit_list_delete() {
    let p = kit().start::<Bookmarks>().unwrap();
    let b = p.call("add", json!({ "url": "https://example.org", "title": "Example" })).unwrap();
    assert_eq!((b["id"].clone(), b["title"].clone()), (json!(1), json!("Example")));
    let e = p.call_err("add", json!({ "url": "https://example.org" }));
    assert_eq!((e.code.as_str(), e.status), ("conflict", 409));
    let e = p.call_err("add", json!({ "url": "ftp://example.org" }));
    assert_eq!((e.code.as_str(), e.status), ("invalid_payload", 400));

    assert_eq!(p.call("visit", json!({ "id": 1 })).unwrap()["visits"], 1);
    assert_eq!(p.route("GET", "/bookmarks/1", json!(null)).unwrap()["visits"], 2);
    assert_eq!(p.kv("visits:1"), Some(json!(2)));

    let page = p.route("GET", "/bookmarks?limit=1", json!(null)).unwrap();
    assert_eq!((page["count"].clone(), page["next_after"].clone()), (json!(1), json!(null)));
    assert_eq!(page["bookmarks"][0]["visits"], 2);
    let e = p.route("GET", "/bookmarks?limit=1000", json!(null)).unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("invalid_payload", 400));

    assert_eq!(p.call("delete", json!({ "id": 1 })).unwrap(), json!({ "deleted": 1 }));
    let e = p.call_err("get", json!({ "id": 1 }));
    assert_eq!((e.code.as_str(), e.status), ("not_found", 404));
    assert_eq!(p.kv("visits:1"), None);
}

#[test]
fn a_miss_is_not_cached_so_a_bookmark_added_after_it_is_found() {
    let p = kit().start::<Bookmarks>().unwrap();
    assert_eq!(p.call_err("get", json!({ "id": 1 })).code, "not_found");
    p.call("add", json!({ "url": "https://late.example" })).unwrap();
    assert_eq!(p.call("get", json!({ "id": 1 })).unwrap()["url"], "https://late.example");
    // The hit is cached now: the host call log shows the cache set after the query.
    assert!(p.host_calls().iter().any(|c| c.service == "cache.set" && c.result.is_ok()));
}

#[test]
fn its_cron_job_keeps_a_summary() {
    let p = kit().start::<Bookmarks>().unwrap();
    let jobs = p.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!((jobs[0].id.as_str(), jobs[0].action.as_str()), ("summary", "summary"));
    p.call("add", json!({ "url": "https://a.example" })).unwrap();
    p.call("visit", json!({ "id": 1 })).unwrap();
    p.run_job("summary").unwrap();
    let summary = p.call("last_summary", json!(null)).unwrap();
    assert_eq!((summary["bookmarks"].clone(), summary["visits"].clone()), (json!(1), json!(1)));
}

#[test]
fn without_the_db_grant_its_sql_is_refused_in_the_hosts_words() {
    // Its constructor only schedules, so it starts; what needs SQL is refused.
    let p = kit().revoke("db:default").start::<Bookmarks>().unwrap();
    let e = p.call_err("add", json!({ "url": "https://x.example" }));
    assert_eq!(e.code, "permission_denied", "{}", e.message);
    assert!(e.message.contains("db:default"), "{}", e.message);
}
