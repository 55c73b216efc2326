//! The dashboard files, embedded in the binary at build time so the hub is one file to deploy.
//! `build.rs` lists every file under `static/` (pages, ES modules, styles, vendored libraries).

use axum::{
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::{AppState, auth::session_token_from_headers};
use crate::{realtime::ClientDefaults, store::User};

include!(concat!(env!("OUT_DIR"), "/static_assets.rs"));

fn find(path: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, mime, body)| (*mime, *body))
}

fn serve(path: &str) -> Response {
    match find(path) {
        Some((mime, body)) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Where a page takes its boot data (an HTML comment in `static/modules.html`).
const BOOT_MARKER: &str = "<!-- mc-boot -->";
/// How long the page may wait for its boot data before it is served without.
const BOOT_DATA_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// What the modules page fetches before it can draw anything, embedded in the page itself.
#[derive(Serialize)]
struct BootData {
    /// As `GET /api/auth/me`.
    me: User,
    /// As `GET /api/realtime/config`.
    config: ClientDefaults,
    /// As `GET /api/modules`.
    modules: super::modules::ModulesResponse,
}

/// `GET /` and `GET /modules`: the modules page. With a valid session, the answers to its first
/// three requests (the user, the realtime config, the modules snapshot) come embedded as JSON
/// (`<script id="mc-boot" type="application/json">`), so the page draws its grid as soon as
/// its scripts run, without waiting for three more round trips and their bodies (first paint,
/// BENCHMARKS.md). Without one (or if the snapshot fails), the plain page, which fetches.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((mime, page)) = find("modules.html") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The page must not wait on a busy tracker or database: past this, it fetches as usual.
    let boot = tokio::time::timeout(BOOT_DATA_TIMEOUT, boot_data(&state, &headers)).await;
    let Ok(Some(boot)) = boot else {
        return serve("modules.html");
    };
    let Some(html) = std::str::from_utf8(page).ok().and_then(|p| embed(p, &boot)) else {
        return serve("modules.html");
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            // the page now carries one user's data: never stored, never shared
            (header::CACHE_CONTROL, "no-store"),
            (header::VARY, "Cookie"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

async fn boot_data(state: &AppState, headers: &HeaderMap) -> Option<BootData> {
    let token = session_token_from_headers(headers)?;
    let me = match state.store.session_user(&token).await {
        Ok(user) => user?,
        Err(e) => {
            tracing::warn!(error = %e, "modules page: session lookup failed; serving it without boot data");
            return None;
        }
    };
    let modules = match super::modules::snapshot(state, &me).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = ?e, "modules page: no snapshot; serving it without boot data");
            return None;
        }
    };
    Some(BootData {
        me,
        config: state.events.client_defaults(),
        modules,
    })
}

/// `page` with `boot` as JSON at [`BOOT_MARKER`]; `None` if the page has no marker.
fn embed(page: &str, boot: &BootData) -> Option<String> {
    let (head, tail) = page.split_once(BOOT_MARKER)?;
    let json = script_safe_json(boot)?;
    let mut html = String::with_capacity(page.len() + json.len() + 64);
    html.push_str(head);
    html.push_str(r#"<script id="mc-boot" type="application/json">"#);
    html.push_str(&json);
    html.push_str("</script>");
    html.push_str(tail);
    Some(html)
}

/// JSON that cannot end the `<script>` element it sits in, whatever the module names say:
/// `<`, `>` and `&` only occur inside JSON strings, where `\u003c` etc. mean the same.
fn script_safe_json<T: Serialize>(value: &T) -> Option<String> {
    let json = match serde_json::to_string(value) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "modules page: boot data does not serialize");
            return None;
        }
    };
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_json_cannot_close_its_script_element() {
        let hostile = serde_json::json!({"name": "</script><script>alert(1)</script> & <!--"});
        let json = script_safe_json(&hostile).expect("serializes");
        assert!(
            !json.contains('<') && !json.contains('>') && !json.contains('&'),
            "{json}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).expect("still JSON");
        assert_eq!(back, hostile);
    }

    #[test]
    fn the_modules_page_has_the_boot_marker_once_before_its_scripts() {
        let (_, page) = find("modules.html").expect("embedded");
        let page = std::str::from_utf8(page).expect("utf-8");
        assert_eq!(page.matches(BOOT_MARKER).count(), 1);
        let marker = page.find(BOOT_MARKER).expect("marker");
        let first_script = page.find("<script").expect("a script");
        assert!(
            marker < first_script,
            "the boot data must precede the script that reads it"
        );
    }
}
