//! Every error the API returns: `application/problem+json` (RFC 9457) with a stable
//! `code`. Nothing here ever includes a stack trace or an internal type name.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use xcore_runtime::{CallFailure, RegistryError};

/// An API error: status, stable code, human-readable detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: String,
    /// What happened, for humans.
    pub detail: String,
    /// Seconds, for 429 and 503 `overloaded` (`Retry-After`).
    pub retry_after: Option<u64>,
    /// The call's request id, echoed in `x-request-id`.
    pub request_id: Option<String>,
    /// Close the connection after answering (the request was not read to its end).
    pub close: bool,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
}

impl ApiError {
    /// An error with a status and code.
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.to_string(),
            detail: detail.into(),
            retry_after: None,
            request_id: None,
            close: false,
        }
    }

    /// Closes the connection after this answer: for a request whose body was not read
    /// to its end, so that the rest of it is never taken for the next request.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Tags the error with the call's request id.
    pub fn with_request_id(mut self, rid: &str) -> Self {
        self.request_id = Some(rid.to_string());
        self
    }

    /// 401.
    pub fn unauthorized(detail: &str) -> Self {
        Self::new(401, "unauthorized", detail)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = Problem {
            kind: format!("urn:xcore:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            code: &self.code,
            detail: &self.detail,
        };
        let mut resp = HttpResponse::build(self.status);
        resp.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let Some(secs) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let Some(rid) = &self.request_id {
            resp.insert_header(("x-request-id", rid.as_str()));
        }
        if self.close {
            resp.force_close();
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        resp.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

impl From<CallFailure> for ApiError {
    fn from(f: CallFailure) -> Self {
        let mut e = ApiError::new(f.status(), f.code(), f.to_string());
        if let Some(retry_after) = f.retry_after() {
            // Round up: a client that waits exactly this long is admitted.
            e.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
        }
        e
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match &e {
            RegistryError::UnknownPlugin(_) => ApiError::new(404, "unknown_plugin", e.to_string()),
            RegistryError::Conflict { .. } => ApiError::new(409, "conflict", e.to_string()),
            RegistryError::LoadFailed(f) => ApiError::new(f.kind.status(), f.kind.code(), e.to_string()),
            RegistryError::Required { .. } => ApiError::new(409, "required_by_others", e.to_string()),
            RegistryError::Store(_) => ApiError::new(503, "store_unavailable", e.to_string()),
        }
    }
}
