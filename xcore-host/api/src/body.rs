//! Reading request bodies under the configured size limit and deadline, and validating
//! JSON. Every route that takes a body goes through here, so a body is refused the same
//! way everywhere (size, time, syntax, nesting).

use std::time::Duration;

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::HttpRequest;
use futures_util::StreamExt;

use super::problem::ApiError;
use xcore_runtime::metrics::Metrics;

/// The deepest nesting of arrays and objects a JSON body may have. serde_json refuses
/// 128 levels when it builds a value, and the host wraps bodies one or two levels deeper
/// (a plugin route's `{"body": ...}`, an event handler's `{"event", "payload"}`), so
/// anything accepted here still parses everywhere it travels.
pub const MAX_JSON_DEPTH: usize = 64;

/// How much body a request may send, and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `server.body_limit_bytes`.
    pub max_bytes: usize,
    /// `server.body_timeout_ms`: the whole body must arrive within it.
    pub timeout: Duration,
}

/// Counts a refusal under its code in `xcore_http_rejected_total`, and hands it back.
pub(super) fn rejected(metrics: &Metrics, e: ApiError) -> ApiError {
    metrics.http_rejected.with_label_values(&[e.code.as_str()]).inc();
    e
}

/// Reads the body, refusing more than `limits.max_bytes` with 413 `payload_too_large`
/// and a body that has not fully arrived within `limits.timeout` with 408
/// `body_timeout`.
///
/// An oversized body is drained (up to a hard cap, under the same deadline) before
/// answering, so that a client that writes its whole body before reading sees the 413
/// instead of a reset.
pub async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
) -> Result<Bytes, ApiError> {
    let mut seen = 0usize;
    let read = read_until_done(req, payload, limits.max_bytes, &mut seen);
    match tokio::time::timeout(limits.timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            408,
            "body_timeout",
            format!(
                "the body did not arrive within {} ms (server.body_timeout_ms); {seen} bytes were read",
                limits.timeout.as_millis()
            ),
        )
        .closing()),
    }
}

async fn read_until_done(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    seen: &mut usize,
) -> Result<Bytes, ApiError> {
    let too_large = |n: usize| {
        ApiError::new(
            413,
            "payload_too_large",
            format!("the body is {n} bytes or more; the limit is {limit} bytes (server.body_limit_bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let drain_cap = limit.saturating_mul(16).max(16 << 20);
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(400, "bad_request", format!("reading the body: {e}")))?;
        *seen += chunk.len();
        if *seen > limit || declared.is_some_and(|d| d > limit) {
            if *seen > drain_cap {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if *seen > limit || declared.is_some_and(|d| d > limit) {
        return Err(too_large((*seen).max(declared.unwrap_or(0))));
    }
    Ok(buf.freeze())
}

/// Checks that `body` is one JSON value nested at most [`MAX_JSON_DEPTH`] deep; 400
/// `invalid_json` otherwise, with the line and column or the depth. An empty body (or
/// only whitespace) is the caller's business: [`read_json`] makes it `null`.
fn validate_json(body: &[u8]) -> Result<(), ApiError> {
    // The depth first: it is one cheap pass and stops at the first level too many, where
    // a syntax check of a 100 000-deep body would read it all.
    if let Some(at) = too_deep(body, MAX_JSON_DEPTH) {
        return Err(ApiError::new(
            400,
            "invalid_json",
            format!("the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels (at byte {at})"),
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| ApiError::new(400, "invalid_json", format!("the body is not valid JSON: {e}")))?;
    Ok(())
}

/// The offset of the first `[` or `{` that opens level `max + 1`, outside strings.
/// Meant to run before a syntax check: on invalid JSON it answers something, never panics.
fn too_deep(body: &[u8], max: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Reads a JSON body; an empty body is `null`. Invalid or too deeply nested JSON is 400
/// `invalid_json`. The bytes come back as sent (the call route hands them on as is).
pub async fn read_json(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
    metrics: &Metrics,
) -> Result<Bytes, ApiError> {
    let body = read_limited(req, payload, limits).await.map_err(|e| rejected(metrics, e))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"null"));
    }
    validate_json(&body).map_err(|e| rejected(metrics, e))?;
    Ok(body)
}

/// [`read_json`], parsed: for the routes that look into the body or wrap it.
pub async fn read_json_value(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
    metrics: &Metrics,
) -> Result<serde_json::Value, ApiError> {
    let body = read_json(req, payload, limits, metrics).await?;
    // Validated above, so this only fails if serde_json's own limits are lower than ours.
    serde_json::from_slice(&body).map_err(|e| {
        rejected(metrics, ApiError::new(400, "invalid_json", format!("the body is not valid JSON: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut v = "[".repeat(depth).into_bytes();
        v.extend(std::iter::repeat_n(b']', depth));
        v
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(validate_json(&nested(MAX_JSON_DEPTH)).is_ok());
        let e = validate_json(&nested(MAX_JSON_DEPTH + 1)).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        assert!(e.detail.contains("deeper than 64"), "{}", e.detail);
        let e = validate_json(&nested(100_000)).unwrap_err();
        assert!(e.detail.contains("deeper than"), "{}", e.detail);
        // Brackets inside strings, escaped quotes included, are text.
        let s = format!("{{\"a\": \"\\\"{}\"}}", "[".repeat(500));
        assert!(validate_json(s.as_bytes()).is_ok());
        assert_eq!(too_deep(br#"{"k": "\\", "x": [[1]]}"#, 2), Some(18));
    }

    #[test]
    fn whatever_passes_parses_into_a_value_even_wrapped_twice() {
        let body = nested(MAX_JSON_DEPTH);
        validate_json(&body).unwrap();
        let wrapped = format!("{{\"a\": {{\"b\": {}}}}}", String::from_utf8(body).unwrap());
        serde_json::from_str::<serde_json::Value>(&wrapped).unwrap();
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let e = validate_json(b"{\"a\": ").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        assert!(e.detail.contains("line 1"), "{}", e.detail);
        // Unbalanced closers neither panic nor pass.
        assert!(validate_json(b"]]]]").is_err());
    }
}
