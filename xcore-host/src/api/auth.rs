//! Admin authentication: `Authorization: Bearer <token>`, compared in constant time.

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

    /// Checks the request's bearer token.
    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized("this route needs 'Authorization: Bearer <admin token>'"));
        };
        let presented = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        match presented {
            Some(t) if bool::from(t.as_bytes().ct_eq(self.0.as_bytes())) => Ok(()),
            _ => Err(ApiError::unauthorized("the admin token is missing or wrong")),
        }
    }
}
