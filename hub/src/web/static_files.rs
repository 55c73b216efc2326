//! The dashboard files, embedded in the binary at build time so the hub is one file to deploy.
//! `build.rs` lists every file under `static/` (pages, ES modules, styles, vendored libraries).

use axum::{
    http::{Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

include!(concat!(env!("OUT_DIR"), "/static_assets.rs"));

fn serve(path: &str) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /` and `GET /modules`: the modules page.
pub async fn index() -> Response {
    serve("modules.html")
}

/// `GET /login`: the sign-in page.
pub async fn login() -> Response {
    serve("login.html")
}

/// `GET /admin`: the admin page (it sends non-admins to `/`).
pub async fn admin() -> Response {
    serve("admin.html")
}

/// Any other path: an embedded file for `GET`, 404 otherwise.
pub async fn asset(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::NOT_FOUND.into_response();
    }
    serve(uri.path().trim_start_matches('/'))
}
