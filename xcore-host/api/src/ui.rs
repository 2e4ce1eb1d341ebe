//! The operator dashboard: static files under `/ui/`, compiled into the binary with
//! `include_str!` (four files, no build step, no Node toolchain), that use only the
//! public HTTP API (`/api/v1/...`, `/health`, `/metrics`) with the token the operator
//! signs in with (kept in the tab's `sessionStorage`, sent as `Authorization: Bearer`;
//! never a cookie, so no cross-site request can act with it, and never in a URL).
//!
//! Every answer under `/ui/` carries [`CSP`] (scripts, styles, images and connections
//! from this origin only; no inline script or style; no framing, no `<base>`, no form
//! posts), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`. These routes are not in the OpenAPI document: they
//! are files, not API.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};

use super::problem::ApiError;

/// The Content-Security-Policy of every `/ui/` answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's files: path under `/ui/`, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("", "text/html; charset=utf-8", include_str!("../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../ui/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../ui/app.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../ui/favicon.svg")),
];

/// The security headers on `resp`.
fn secured(mut resp: HttpResponseBuilder) -> HttpResponseBuilder {
    resp.insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // Files change with the binary; a browser asks again rather than run stale code.
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    resp
}

/// Registers `/`, `/ui` (both redirect to `/ui/`) and `/ui/{file}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(to_index))
        .route("/ui", web::get().to(to_index))
        .route("/ui/{file:.*}", web::get().to(file));
}

async fn to_index() -> HttpResponse {
    secured(HttpResponse::Found()).insert_header((header::LOCATION, "/ui/")).finish()
}

async fn file(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    match FILES.iter().find(|(name, _, _)| *name == path.as_str()) {
        Some((_, kind, body)) => {
            secured(HttpResponse::Ok()).insert_header((header::CONTENT_TYPE, *kind)).body(*body)
        }
        None => {
            let e = ApiError::new(404, "not_found", format!("no dashboard file {}", req.path()));
            let mut resp = actix_web::ResponseError::error_response(&e);
            for (k, v) in [
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ] {
                resp.headers_mut().insert(k, header::HeaderValue::from_static(v));
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{test as actix_test, App};

    use super::*;

    #[actix_web::test]
    async fn every_file_and_the_redirects_carry_the_security_headers() {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        for (uri, status) in [
            ("/ui/", 200),
            ("/ui/app.js", 200),
            ("/ui/app.css", 200),
            ("/ui/favicon.svg", 200),
            ("/ui", 302),
            ("/", 302),
            ("/ui/nothing.js", 404),
        ] {
            let resp =
                actix_test::call_service(&app, actix_test::TestRequest::get().uri(uri).to_request()).await;
            assert_eq!(resp.status().as_u16(), status, "{uri}");
            let h = resp.headers();
            assert_eq!(h.get(header::CONTENT_SECURITY_POLICY).unwrap(), CSP, "{uri}");
            assert_eq!(h.get(header::X_FRAME_OPTIONS).unwrap(), "DENY", "{uri}");
            assert_eq!(h.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff", "{uri}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_the_policy_allows_none() {
        let html = FILES[0].2;
        assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        // Every <script> has a src; no style element, no style attribute, no on* handler.
        for (at, _) in html.match_indices("<script") {
            let tag = &html[at..at + html[at..].find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: {tag}");
        }
        let lower = html.to_lowercase();
        assert!(!lower.contains("<style") && !lower.contains(" style=") && !lower.contains(" onclick="));
        // The script builds no markup from strings (no innerHTML), so API text is never HTML.
        let js = FILES[1].2;
        assert!(!js.contains("innerHTML") && !js.contains("eval(") && !js.contains("new Function"));
        assert!(!js.contains("localStorage"), "the token stays in sessionStorage");
    }
}
