//! Test harness: real plugin folders in a temp dir, the real `xcore` binary, real HTTP.
//!
//! The libraries come from the workspace build (`make test` builds them first); a test
//! copies them into its own plugins folder and writes the manifests it needs.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-admin-token";

/// The folder holding the built libraries (next to the `xcore` binary).
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xcore")).parent().expect("target dir").to_path_buf()
}

/// Path of a built workspace library by crate name (`xcore-plugin-echo`).
pub fn lib(crate_name: &str) -> PathBuf {
    let p = target_dir().join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ));
    assert!(p.is_file(), "{} is missing: run `make test` (or `cargo build --workspace`) first", p.display());
    p
}

/// One plugin folder to create: its name, the library crate to copy in, the manifest.
pub struct PluginSpec {
    pub folder: String,
    pub library: Option<&'static str>,
    pub manifest: String,
    /// A folder of the repository's `plugins/` whose `migrations/` is copied in.
    pub migrations_from: Option<&'static str>,
}

impl PluginSpec {
    pub fn new(folder: &str, library: &'static str, manifest: &str) -> Self {
        PluginSpec {
            folder: folder.into(),
            library: Some(library),
            manifest: manifest.into(),
            migrations_from: None,
        }
    }

    /// A manifest for `name` with extra YAML lines appended.
    pub fn with(folder: &str, library: &'static str, extra_yaml: &str) -> Self {
        let manifest = format!(
            "name: {folder}\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: lib{folder}.so\n{extra_yaml}\n"
        );
        Self::new(folder, library, &manifest)
    }

    pub fn echo() -> Self {
        Self::with("echo", "xcore-plugin-echo", "")
    }

    pub fn notes() -> Self {
        let manifest = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/notes/plugin.yaml"),
        )
        .expect("notes manifest");
        PluginSpec::new("notes", "xcore-plugin-notes", &manifest)
    }

    /// The bookmarks example (SQL, key-value store, cache, a cron job) with its
    /// migrations; `permissions` replaces its manifest's list when given.
    pub fn bookmarks(permissions: Option<&str>) -> Self {
        let mut manifest = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/bookmarks/plugin.yaml"),
        )
        .expect("bookmarks manifest");
        if let Some(p) = permissions {
            let start = manifest.find("permissions:").expect("permissions in the manifest");
            let end = manifest[start..].find("routes:").map(|e| start + e).expect("routes after permissions");
            manifest.replace_range(start..end, &format!("permissions: {p}\n"));
        }
        let mut spec = PluginSpec::new("bookmarks", "xcore-plugin-bookmarks", &manifest);
        spec.migrations_from = Some("bookmarks");
        spec
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The problem's `code`, asserting the problem+json content type.
    pub fn code(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{}", self.body);
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `  grants:` lines granting every plugin folder under `plugins_dir` the permissions its
/// manifest asks for (folders without a readable manifest get none).
pub fn grants_yaml(plugins_dir: &Path) -> String {
    let mut out = String::new();
    let mut entries: Vec<_> = std::fs::read_dir(plugins_dir).into_iter().flatten().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(loaded) = xcore_manifest::load(&e.path()) else { continue };
        let perms = &loaded.manifest.permissions;
        if !perms.is_empty() {
            let name = e.file_name().to_string_lossy().into_owned();
            out.push_str(&format!("    {}: {}\n", serde_json::json!(name), serde_json::json!(perms)));
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("  grants:\n{out}")
    }
}

pub fn write_plugins(root: &Path, plugins: &[PluginSpec]) {
    for p in plugins {
        let dir = root.join(&p.folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plugin.yaml"), &p.manifest).unwrap();
        if let Some(l) = p.library {
            // Where the manifest points (default: lib<folder>.so).
            let entry = p
                .manifest
                .lines()
                .find_map(|l| l.strip_prefix("entry_point:"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| format!("lib{}.so", p.folder));
            std::fs::copy(lib(l), dir.join(entry)).unwrap();
        }
        if let Some(from) = p.migrations_from {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins").join(from).join("migrations");
            copy_tree(&src, &dir.join("migrations"));
        }
    }
}

impl Server {
    /// Starts `xcore serve` on a free port with these plugins and waits for /health.
    pub fn start(plugins: &[PluginSpec]) -> Server {
        Self::start_with(plugins, "")
    }

    pub fn start_with(plugins: &[PluginSpec], extra_config: &str) -> Server {
        Self::start_full(plugins, extra_config, &[])
    }

    /// With extra top-level YAML and extra environment variables (`XCORE__...`).
    pub fn start_full(plugins: &[PluginSpec], extra_config: &str, env: &[(&str, &str)]) -> Server {
        Self::start_custom(|dir| write_plugins(dir, plugins), extra_config, env, &[])
    }

    /// `prepare` fills the plugins folder; `args` are added to `xcore serve`.
    pub fn start_custom(
        prepare: impl FnOnce(&Path),
        extra_config: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        prepare(&dir.path().join("plugins"));
        let port = free_port();
        // The watcher is off unless a test turns it on: tests write into their plugins
        // folder and call the admin routes themselves.
        // The operator grants each test plugin what its manifest asks for (written out in
        // `plugins.grants`), so that tests of unsigned plugins keep meaning what they
        // meant; a test that sets `grants:` itself gets only its own.
        let grants = if extra_config.contains("grants:") {
            String::new()
        } else {
            grants_yaml(&dir.path().join("plugins"))
        };
        let (plugins, extra_config) = match extra_config.strip_prefix("plugins:\n") {
            Some(rest) => (String::new(), format!("plugins:\n{grants}{rest}")),
            None if extra_config.contains("\nplugins:\n") => {
                (String::new(), extra_config.replacen("\nplugins:\n", &format!("\nplugins:\n{grants}"), 1))
            }
            None => (format!("plugins:\n  watch: false\n{grants}"), extra_config.to_string()),
        };
        // Signatures have tests of their own; elsewhere the test plugins are unsigned.
        let security =
            if extra_config.contains("security:") { "" } else { "security:\n  require_signatures: none\n" };
        let config = format!(
            "server:\n  port: {port}\n  admin_token: {TOKEN}\n  workers: 2\n  shutdown_timeout_seconds: 5\nlogging:\n  level: debug\n  console: true\n{plugins}{security}{extra_config}"
        );
        std::fs::write(dir.path().join("xcore.yaml"), config).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut server = Server {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            agent,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// Starts the process (again) in the same folder, with the same configuration,
    /// port and environment, and waits for /health.
    fn spawn(&mut self) {
        // Output accumulates across restarts.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.out"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_xcore"))
            .args(["serve", "--config", "xcore.yaml"])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn xcore");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.try_get("/health") {
                if r.status == 200 {
                    break;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("xcore exited early ({status}):\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "xcore did not come up:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGTERM) if it runs, and starts it again on the same folder.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.terminate();
            assert!(status.success(), "xcore stopped with {status}:\n{}", self.output());
        }
        self.spawn();
    }

    /// Starts the server again after [`Server::kill_hard`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// The server process's pid (0 once it has been stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default()
    }

    fn finish(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, ureq::Error> {
        let mut resp = resp?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let mut body = String::new();
        resp.body_mut().as_reader().read_to_string(&mut body).ok();
        Ok(Reply { status, headers, body })
    }

    pub fn try_get(&self, path: &str) -> Result<Reply, ureq::Error> {
        Self::finish(self.agent.get(format!("{}{path}", self.base)).call())
    }

    pub fn get(&self, path: &str) -> Reply {
        self.try_get(path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.output()))
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.post_with(path, body, None)
    }

    pub fn admin(&self, path: &str) -> Reply {
        self.post_with(path, "", Some(TOKEN))
    }

    pub fn try_post(&self, path: &str, body: &[u8], token: Option<&str>) -> Result<Reply, ureq::Error> {
        let mut req =
            self.agent.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        Self::finish(req.send(body))
    }

    pub fn post_with(&self, path: &str, body: &str, token: Option<&str>) -> Reply {
        self.try_post(path, body.as_bytes(), token)
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.output()))
    }

    /// POST with an `x-request-id` header.
    pub fn request_with_id(&self, path: &str, body: &str, rid: &str) -> Reply {
        let req = self.agent.post(format!("{}{path}", self.base)).header("x-request-id", rid);
        Self::finish(req.send(body.as_bytes())).unwrap()
    }

    /// A GET with the admin token.
    pub fn request_admin(&self, method: &str, path: &str) -> Reply {
        assert_eq!(method, "GET", "request_admin sends GETs; use post_with for POSTs");
        let url = format!("{}{path}", self.base);
        let resp = self.agent.get(&url).header("Authorization", &format!("Bearer {TOKEN}")).call();
        Self::finish(resp).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.output()))
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", b) => self.agent.post(&url).send(b.unwrap_or("").as_bytes()),
            ("PUT", b) => self.agent.put(&url).send(b.unwrap_or("").as_bytes()),
            _ => panic!("method {method}"),
        };
        Self::finish(resp).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.output()))
    }

    /// `GET /api/v1/plugins/{name}` as JSON, in full (with the admin token: without a
    /// token the route hides paths, pids and error texts).
    pub fn info(&self, name: &str) -> Value {
        let r = self.request_admin("GET", &format!("/api/v1/plugins/{name}"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    pub fn call(&self, plugin: &str, action: &str, body: &str) -> Reply {
        self.post(&format!("/api/v1/plugins/{plugin}/call/{action}"), body)
    }

    /// Polls until the plugin reaches `state`, or panics after `within`.
    pub fn wait_state(&self, name: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let info = self.info(name);
            if info["state"] == state {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "plugin {name} never reached {state}: {info}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // The kill command keeps the tests free of unsafe libc calls.
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("xcore did not stop on SIGTERM:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as an OOM killer or an operator would.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A database created for one test on the PostgreSQL or MySQL server of an
/// `XCORE_TEST_*_URL` variable, dropped when this is dropped (also while a failed
/// assertion unwinds).
pub struct TempDatabase {
    admin_url: String,
    backend: xcore_db::Backend,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl TempDatabase {
    /// A fresh database on the server of `env_var`; `None` (and a printed line) when the
    /// variable is not set.
    pub fn from_env(env_var: &str, backend: xcore_db::Backend) -> Option<TempDatabase> {
        let Ok(admin_url) = std::env::var(env_var) else {
            println!("skipped: {env_var} is not set");
            return None;
        };
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Lower case, for PostgreSQL.
        let name = format!("xcore_test_{}_{nanos}_{n}", std::process::id());
        admin_execute(&admin_url, backend, &format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
        let url = format!("{base}/{name}");
        Some(TempDatabase { admin_url, backend, name, url })
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let sql = match self.backend {
            xcore_db::Backend::Postgres => {
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)
            }
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // Never panic here: this may run while a failed assertion unwinds.
        if let Err(e) = admin_execute(&self.admin_url, self.backend, &sql) {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
        // The plugins' roles (PostgreSQL), users and databases (MySQL) belong to the
        // server, not to the test's database: drop the ones of this installation.
        if let Err(e) = drop_plugin_namespaces(&self.admin_url, self.backend, &self.name) {
            eprintln!("could not drop the plugin namespaces of {}: {e}", self.name);
        }
    }
}

/// Drops the plugins' roles (PostgreSQL), users and databases (MySQL) of the
/// installation on the database `db`: they belong to the server, not to the database.
fn drop_plugin_namespaces(url: &str, backend: xcore_db::Backend, db: &str) -> Result<(), String> {
    use xcore_db::Backend;
    let tag = xcore_db::namespace::server_tag(db);
    match backend {
        Backend::Postgres => admin_execute(
            url,
            backend,
            &format!(
                "DO $$ DECLARE r text; BEGIN FOR r IN SELECT rolname FROM pg_roles WHERE starts_with(rolname, '{tag}') \
                 LOOP EXECUTE format('DROP ROLE %I', r); END LOOP; END $$"
            ),
        ),
        Backend::Mysql => {
            use diesel::{Connection, RunQueryDsl};
            use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
            use diesel_async::AsyncMysqlConnection;
            #[derive(diesel::QueryableByName)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Text)]
                stmt: String,
            }
            let like = tag.replace('_', "\\_");
            let list = format!(
                "SELECT CONCAT('DROP DATABASE IF EXISTS `', schema_name, '`') AS stmt FROM information_schema.schemata \
                 WHERE schema_name LIKE '{like}%' UNION ALL \
                 SELECT CONCAT('DROP USER IF EXISTS ''', user, '''@''', host, '''') AS stmt FROM mysql.user \
                 WHERE user LIKE '{like}%'"
            );
            let url = url.to_string();
            std::thread::spawn(move || {
                let mut c =
                    AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(&url).map_err(|e| e.to_string())?;
                let drops: Vec<Row> = diesel::sql_query(list).load(&mut c).map_err(|e| e.to_string())?;
                for d in drops {
                    diesel::sql_query(&d.stmt).execute(&mut c).map_err(|e| format!("{}: {e}", d.stmt))?;
                }
                Ok(())
            })
            .join()
            .map_err(|_| "the admin connection thread panicked".to_string())?
        }
        Backend::Sqlite => Ok(()),
    }
}

/// Runs one statement through a new PostgreSQL or MySQL connection to `url`, on a plain
/// thread (diesel-async's wrapper runs a small runtime of its own, which must not start
/// inside another one).
pub fn admin_execute(url: &str, backend: xcore_db::Backend, sql: &str) -> Result<(), String> {
    use diesel::{Connection, RunQueryDsl};
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
    use xcore_db::Backend;
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || match backend {
        Backend::Postgres => {
            let mut c =
                AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).map_err(|e| e.to_string())?;
            diesel::sql_query(sql).execute(&mut c).map(drop).map_err(|e| e.to_string())
        }
        Backend::Mysql => {
            let mut c =
                AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(&url).map_err(|e| e.to_string())?;
            diesel::sql_query(sql).execute(&mut c).map(drop).map_err(|e| e.to_string())
        }
        Backend::Sqlite => Err("SQLite needs no admin connection".into()),
    })
    .join()
    .map_err(|_| "the admin connection thread panicked".to_string())?
}
