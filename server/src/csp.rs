//! The Content-Security-Policy of every response. Model output is untrusted
//! text: even if some of it ever reached the page as markup, the browser
//! would run no script that the server did not sign for this very response.
//! The chat page allows only inline scripts carrying the response's nonce
//! (Leptos's hydration script), script files from kinko itself (the bundle
//! it loads) and WebAssembly; no inline handler, no script added by
//! markup. Every other response allows no script at all.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use leptos::config::LeptosOptions;
use leptos::prelude::*;

/// The policy of a page whose scripts carry `nonce`.
pub fn page_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
}

/// The policy of every other response: no scripts.
pub const NO_SCRIPTS: &str = "default-src 'self'; script-src 'none'; style-src 'self'; \
     img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
     form-action 'self'";

/// The UI's HTML shell, with its nonce-based policy set on the response.
pub fn page_shell(options: LeptosOptions) -> impl IntoView {
    if let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) {
        if let Ok(value) = HeaderValue::from_str(&page_policy(&nonce)) {
            response.insert_header(header::CONTENT_SECURITY_POLICY, value);
        }
    }
    let (lang, theme) = use_context::<axum::http::request::Parts>()
        .map(|parts| crate::security::page_prefs(&parts.headers))
        .unwrap_or_default();
    app::shell(options, lang, theme)
}

/// Middleware: a response that set no policy of its own gets [`NO_SCRIPTS`];
/// every response gets `nosniff`, and a referrer only within kinko (`no-referrer`
/// would make browsers send `Origin: null` on the login form, which the
/// origin check refuses).
pub async fn default_policy(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(NO_SCRIPTS),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
