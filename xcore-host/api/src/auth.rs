//! Authentication: `Authorization: Bearer <token>`, compared in constant time. The single
//! admin token (`server.admin_token` or the generated `runtime/admin.token`), and named
//! tokens with a role (`admin`, `operator`, `reader`) kept hashed (SHA-256) in
//! `runtime/tokens.json` (mode 0600, temp + rename), made by `xcore token create`.

use std::path::{Path, PathBuf};

use actix_web::http::header;
use actix_web::HttpRequest;
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::problem::ApiError;

/// The admin token the server accepts.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// A configured token.
    pub fn new(token: String) -> Self {
        AdminToken(token)
    }

    /// Generates a random token and writes it to `dir/admin.token`, readable only by its
    /// owner. Returns the token and the file's path.
    pub fn generate(dir: &Path) -> std::io::Result<(Self, PathBuf)> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::create_dir_all(dir)?;
        let path = dir.join("admin.token");
        let tmp = dir.join(".admin.token.tmp");
        {
            use std::io::Write;
            #[cfg(unix)]
            use std::os::unix::fs::OpenOptionsExt;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            opts.mode(0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(token.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok((AdminToken(token), path))
    }
}

/// What a token may do. Ordered: each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The read routes in full (today: the audit log, beside the open read routes).
    Reader,
    /// Reader, plus reload, reset, enable, disable and running a job.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// The role's name, as written in tokens.json and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(TokenError::Role(other.chars().take(40).collect())),
        }
    }
}

/// The name of the named-token file under the runtime folder.
pub const TOKENS_FILE: &str = "tokens.json";
/// The most named tokens the file may hold.
pub const MAX_TOKENS: usize = 1000;
/// The largest tokens file read (bytes).
pub const MAX_TOKENS_FILE_BYTES: u64 = 1024 * 1024;

/// Errors of the named-token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not what this host writes.
    #[error("{path}: not a tokens file: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A name outside `[a-z0-9_-]{1,64}`.
    #[error("{0:?} is not a token name (1 to 64 of a-z, 0-9, '_' and '-')")]
    Name(String),
    /// A role that does not exist.
    #[error("{0:?} is not a role (admin, operator or reader)")]
    Role(String),
    /// The name is taken.
    #[error("a token named '{0}' exists already")]
    Exists(String),
    /// Too many tokens.
    #[error("the tokens file holds {MAX_TOKENS} tokens already (the limit)")]
    TooMany,
    /// No token of that name.
    #[error("no token named {0:?} (xcore token list shows them)")]
    NotFound(String),
}

/// One named token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredToken {
    /// Its name (`[a-z0-9_-]{1,64}`), used as the audit actor `token:NAME@peer`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    version: u32,
    tokens: Vec<StoredToken>,
}

fn sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut out = [0u8; 32];
    out.copy_from_slice(&sha2::Sha256::digest(token.as_bytes()));
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn read_tokens(path: &Path) -> Result<TokensFile, TokenError> {
    let io = |source| TokenError::Io { path: path.to_path_buf(), source };
    let invalid = |detail: String| TokenError::Invalid { path: path.to_path_buf(), detail };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(TokensFile { version: 1, tokens: Vec::new() })
        }
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_TOKENS_FILE_BYTES {
        return Err(invalid(format!("{} bytes, over the limit of {MAX_TOKENS_FILE_BYTES}", meta.len())));
    }
    let text = std::fs::read(path).map_err(io)?;
    let file: TokensFile = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    if file.version != 1 {
        return Err(invalid(format!("version {} (this host reads version 1)", file.version)));
    }
    if file.tokens.len() > MAX_TOKENS {
        return Err(invalid(format!("{} tokens, over the limit of {MAX_TOKENS}", file.tokens.len())));
    }
    for t in &file.tokens {
        if !valid_token_name(&t.name) || unhex(&t.sha256).is_none() {
            return Err(invalid(format!("entry {:?} has a bad name or sha256", t.name)));
        }
    }
    Ok(file)
}

/// An exclusive lock made with `O_EXCL` (works on every platform without `unsafe`),
/// removed on drop. A lock older than [`STALE_LOCK`] was left by a process that died and
/// is taken over; waiting longer than [`LOCK_WAIT`] is an error naming the file.
struct CreateLock(PathBuf);

/// How long `xcore token create` waits for another one to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// A lock file this old is stale.
const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(30);

impl CreateLock {
    fn acquire(path: PathBuf) -> std::io::Result<Self> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(CreateLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > STALE_LOCK) {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::WouldBlock,
                            format!(
                                "{} held for over {} s by another `xcore token create` (remove it if none runs)",
                                path.display(),
                                LOCK_WAIT.as_secs()
                            ),
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for CreateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Creates a named token in `runtime_dir/tokens.json` (mode 0600, temp + rename) and
/// returns the token itself, which is stored nowhere: only its SHA-256 is kept.
pub fn create_token(runtime_dir: &Path, name: &str, role: Role) -> Result<String, TokenError> {
    if !valid_token_name(name) {
        return Err(TokenError::Name(name.chars().take(80).collect()));
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("xct_{}", hex(&bytes));
    update_tokens(runtime_dir, |file| {
        if file.tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::Exists(name.to_string()));
        }
        if file.tokens.len() >= MAX_TOKENS {
            return Err(TokenError::TooMany);
        }
        file.tokens.push(StoredToken {
            name: name.to_string(),
            role,
            sha256: hex(&sha256(&token)),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        Ok(())
    })?;
    Ok(token)
}

/// The named tokens of `runtime_dir/tokens.json` (name, role, creation time; the hashes
/// are of no use to anyone reading the list and are not returned).
pub fn list_tokens(runtime_dir: &Path) -> Result<Vec<(String, Role, String)>, TokenError> {
    let file = read_tokens(&runtime_dir.join(TOKENS_FILE))?;
    Ok(file.tokens.into_iter().map(|t| (t.name, t.role, t.created)).collect())
}

/// Removes the named token `name`; a running server refuses it from its next request on
/// (it reads the file again when it changes).
pub fn revoke_token(runtime_dir: &Path, name: &str) -> Result<Role, TokenError> {
    let mut revoked = None;
    update_tokens(runtime_dir, |file| {
        let at = file.tokens.iter().position(|t| t.name == name);
        let at = at.ok_or_else(|| TokenError::NotFound(name.chars().take(80).collect()))?;
        revoked = Some(file.tokens.remove(at).role);
        Ok(())
    })?;
    Ok(revoked.unwrap_or(Role::Reader))
}

/// Read-modify-write of the tokens file under the lock (two `xcore token` commands at
/// once must not lose a change), written to a temporary file (mode 0600) and renamed.
fn update_tokens(
    runtime_dir: &Path,
    change: impl FnOnce(&mut TokensFile) -> Result<(), TokenError>,
) -> Result<(), TokenError> {
    let path = runtime_dir.join(TOKENS_FILE);
    let io = |source| TokenError::Io { path: path.clone(), source };
    std::fs::create_dir_all(runtime_dir).map_err(io)?;
    let _lock = CreateLock::acquire(runtime_dir.join(".tokens.lock")).map_err(io)?;
    let mut file = read_tokens(&path)?;
    change(&mut file)?;
    let text = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = runtime_dir.join(format!(".{TOKENS_FILE}.{}.tmp", std::process::id()));
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}

/// The tokens a request may present: the single admin token, and the named tokens of
/// `runtime_dir/tokens.json`, read again whenever the file changes (so `xcore token
/// create` takes effect without a restart).
pub struct Tokens {
    admin: AdminToken,
    path: Option<PathBuf>,
    cache: std::sync::RwLock<Cache>,
}

#[derive(Default)]
struct Cache {
    /// (modified, size, inode): every write renames a new file in, so a change shows
    /// in the inode even where timestamps are coarse.
    stamp: Option<(std::time::SystemTime, u64, u64)>,
    entries: Vec<(String, Role, [u8; 32])>,
}

/// Who a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `server.admin_token` or the generated runtime/admin.token.
    Admin,
    /// A named token.
    Named {
        /// Its name.
        name: String,
        /// Its role.
        role: Role,
    },
}

impl Principal {
    /// The role it has.
    pub fn role(&self) -> Role {
        match self {
            Principal::Admin => Role::Admin,
            Principal::Named { role, .. } => *role,
        }
    }

    /// The audit actor, without the peer: `admin` or `token:NAME`.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Named { name, .. } => format!("token:{name}"),
        }
    }
}

impl Tokens {
    /// The admin token and, when `runtime_dir` is given, the named tokens under it.
    pub fn new(admin: AdminToken, runtime_dir: Option<&Path>) -> Self {
        Tokens {
            admin,
            path: runtime_dir.map(|d| d.join(TOKENS_FILE)),
            cache: std::sync::RwLock::new(Cache::default()),
        }
    }

    /// The named tokens, read again when the file's time or size changed. A file that
    /// cannot be read leaves no named token valid (logged), never the previous ones.
    fn named(&self) -> Vec<(String, Role, [u8; 32])> {
        let Some(path) = &self.path else { return Vec::new() };
        let stamp = std::fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len(), m.ino())
        });
        if let Ok(c) = self.cache.read() {
            if c.stamp == stamp {
                return c.entries.clone();
            }
        }
        let entries = match read_tokens(path) {
            Ok(f) => {
                f.tokens.into_iter().filter_map(|t| unhex(&t.sha256).map(|h| (t.name, t.role, h))).collect()
            }
            Err(e) => {
                log::error!(target: "xcore::api", "named tokens not read: {e}");
                Vec::new()
            }
        };
        if let Ok(mut c) = self.cache.write() {
            c.stamp = stamp;
            c.entries = entries.clone();
        }
        entries
    }

    /// Authenticates the request's bearer token: 401 if it is missing or matches none.
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized("this route needs 'Authorization: Bearer <token>'"));
        };
        let Some(t) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim) else {
            return Err(ApiError::unauthorized("the token is missing or wrong"));
        };
        if bool::from(t.as_bytes().ct_eq(self.admin.0.as_bytes())) {
            return Ok(Principal::Admin);
        }
        let presented = sha256(t);
        // Every entry is compared, in constant time, whichever matches.
        let mut found = None;
        for (name, role, hash) in self.named() {
            if bool::from(presented.ct_eq(&hash)) {
                found = Some(Principal::Named { name, role });
            }
        }
        found.ok_or_else(|| ApiError::unauthorized("the token is missing or wrong"))
    }

    /// Authenticates and checks the role: 401 as above, 403 `forbidden` naming the role
    /// needed when the token's role is lower.
    pub fn authorize(&self, req: &HttpRequest, needed: Role) -> Result<Principal, ApiError> {
        let p = self.authenticate(req)?;
        if p.role() < needed {
            return Err(ApiError::new(
                403,
                "forbidden",
                format!(
                    "this route needs the {} role; token '{}' has the {} role",
                    needed.as_str(),
                    match &p {
                        Principal::Named { name, .. } => name.as_str(),
                        Principal::Admin => "admin",
                    },
                    p.role().as_str()
                ),
            ));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Reader < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Reader, Role::Operator, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn create_stores_only_the_hash_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let token = create_token(dir.path(), "ci", Role::Operator).unwrap();
        let text = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!text.contains(&token) && !text.contains(token.trim_start_matches("xct_")), "{text}");
        assert!(text.contains(&hex(&sha256(&token))));
        assert!(matches!(create_token(dir.path(), "ci", Role::Reader), Err(TokenError::Exists(_))));
        assert!(matches!(create_token(dir.path(), "../x", Role::Reader), Err(TokenError::Name(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKENS_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn revoke_removes_one_token_and_list_shows_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        create_token(dir.path(), "a", Role::Reader).unwrap();
        create_token(dir.path(), "b", Role::Admin).unwrap();
        assert_eq!(revoke_token(dir.path(), "b").unwrap(), Role::Admin);
        let names: Vec<_> = list_tokens(dir.path()).unwrap().into_iter().map(|(n, r, _)| (n, r)).collect();
        assert_eq!(names, [("a".to_string(), Role::Reader)]);
        assert!(matches!(revoke_token(dir.path(), "b"), Err(TokenError::NotFound(_))));
        assert!(list_tokens(tempfile::tempdir().unwrap().path()).unwrap().is_empty());
    }

    #[test]
    fn concurrent_creates_lose_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || create_token(&d, &format!("t{i}"), Role::Reader).unwrap())
            })
            .collect();
        let tokens: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let file = read_tokens(&dir.path().join(TOKENS_FILE)).unwrap();
        assert_eq!(file.tokens.len(), 8);
        for t in &tokens {
            assert!(file.tokens.iter().any(|s| s.sha256 == hex(&sha256(t))));
        }
    }
}
