//! Reading request bodies under the configured size limit, and validating JSON.

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::HttpRequest;
use futures_util::StreamExt;

use super::problem::ApiError;

/// Reads the body, refusing more than `limit` bytes with 413 `payload_too_large`.
///
/// An oversized body is drained (up to a hard cap) before answering, so that a client
/// that writes its whole body before reading sees the 413 instead of a reset.
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = |n: usize| {
        ApiError::new(
            413,
            "payload_too_large",
            format!("the body is {n} bytes or more; the limit is {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let drain_cap = limit.saturating_mul(16).max(16 << 20);
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(400, "bad_request", format!("reading the body: {e}")))?;
        seen += chunk.len();
        if seen > limit || declared.is_some_and(|d| d > limit) {
            if seen > drain_cap {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit || declared.is_some_and(|d| d > limit) {
        return Err(too_large(seen.max(declared.unwrap_or(0))));
    }
    Ok(buf.freeze())
}

/// Reads a JSON body; an empty body is `null`. Invalid JSON is 400 `invalid_json` with
/// the line and column.
pub async fn read_json(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let body = read_limited(req, payload, limit).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"null"));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        .map_err(|e| ApiError::new(400, "invalid_json", format!("the body is not valid JSON: {e}")))?;
    Ok(body)
}
