//! Who may talk to kinko. Three checks, outermost first:
//! - Host allow-list: a loopback-bound server answers only to localhost
//!   names, which stops DNS rebinding (a hostile page whose name resolves to
//!   127.0.0.1).
//! - Origin allow-list: a browser request from any origin other than the
//!   server's own or a configured one gets 403 and a JSON error; preflights
//!   from allowed origins are answered by tower-http's CORS layer.
//! - API key: when one is set, API clients send `Authorization: Bearer KEY`
//!   and browsers log in once on `/login` and get an HttpOnly,
//!   SameSite=Strict session cookie. Keys are compared in constant time.

use crate::error::ApiError;
use crate::models::hex;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "kinko_session";

/// The security settings of one server.
#[derive(Debug)]
pub struct Security {
    api_key_digest: Option<[u8; 32]>,
    session_digest: Option<[u8; 32]>,
    session_value: String,
    allowed_origins: Vec<String>,
    /// `None`: any Host is accepted.
    allowed_hosts: Option<Vec<String>>,
    /// Failed logins per client address: how many, since when.
    failures:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

/// Wrong keys one client address may send to `/login` within
/// [`LOGIN_WINDOW`]; past that, 429 until the window ends.
pub const LOGIN_ATTEMPTS: u32 = 5;
/// The window the failed logins are counted in.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(600);
/// Client addresses remembered at most (the oldest are forgotten first).
const LOGIN_CLIENTS: usize = 10_000;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Constant-time equality of two secrets (compared as digests, so their
/// lengths do not leak either).
fn same_secret(given: &str, expected_digest: &[u8; 32]) -> bool {
    sha256(given.as_bytes()).ct_eq(expected_digest).into()
}

/// `host[:port]` (or `[v6]:port`) to its lowercase host part.
fn host_part(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => a,
    }
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl Security {
    /// Settings for a server bound to `addr`.
    pub fn new(
        addr: SocketAddr,
        api_key: Option<&str>,
        allowed_origins: &[String],
        allowed_hosts: &[String],
    ) -> Self {
        let mut secret = [0u8; 32];
        // Without OS randomness the session value is still unguessable
        // without the key; it just survives restarts.
        let _ = getrandom::fill(&mut secret);
        let session_value = api_key
            .map(|k| {
                let mut material = secret.to_vec();
                material.extend_from_slice(k.as_bytes());
                hex(&sha256(&material))
            })
            .unwrap_or_default();
        let mut hosts: Vec<String> = allowed_hosts.iter().map(|h| host_part(h)).collect();
        let allowed_hosts = if addr.ip().is_loopback() || !hosts.is_empty() {
            hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
            hosts.push(addr.ip().to_string());
            Some(hosts)
        } else {
            None
        };
        Self {
            api_key_digest: api_key.map(|k| sha256(k.as_bytes())),
            session_digest: api_key.map(|_| sha256(session_value.as_bytes())),
            session_value,
            allowed_origins: allowed_origins
                .iter()
                .map(|o| normalize_origin(o))
                .collect(),
            allowed_hosts,
            failures: Default::default(),
        }
    }

    /// Seconds until `ip` may try a key again, if it is locked out now.
    fn locked_out(&self, ip: std::net::IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (count, since) = failures.get(&ip)?;
        let left = LOGIN_WINDOW.checked_sub(since.elapsed())?;
        (*count >= LOGIN_ATTEMPTS).then(|| left.as_secs().max(1))
    }

    /// Count a wrong key from `ip`.
    fn failed_login(&self, ip: std::net::IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (_, since)| since.elapsed() < LOGIN_WINDOW);
        if failures.len() >= LOGIN_CLIENTS {
            if let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(ip).or_insert((0, std::time::Instant::now()));
        entry.0 += 1;
    }

    /// A right key from `ip`: its count starts over.
    fn good_login(&self, ip: std::net::IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&ip);
    }

    /// Whether an API key is required.
    pub fn requires_key(&self) -> bool {
        self.api_key_digest.is_some()
    }

    fn host_allowed(&self, host: Option<&str>) -> bool {
        match (&self.allowed_hosts, host) {
            (None, _) | (_, None) => true,
            (Some(list), Some(h)) => {
                let h = host_part(h);
                list.contains(&h)
            }
        }
    }

    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = normalize_origin(origin);
        let same_origin = host.is_some_and(|h| {
            let h = h.trim().to_ascii_lowercase();
            origin == format!("http://{h}") || origin == format!("https://{h}")
        });
        same_origin || self.allowed_origins.contains(&origin)
    }

    /// Whether the request's key (Bearer) or session cookie is right (always,
    /// when no key is required).
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key_digest else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| same_secret(b.trim(), key)) {
            return true;
        }
        let Some(session) = &self.session_digest else {
            return false;
        };
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
            .any(|value| same_secret(value, session))
    }

    /// The CORS layer for the configured extra origins.
    pub fn cors_layer(&self) -> CorsLayer {
        let origins: Vec<HeaderValue> = self
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::HEAD])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT])
            .max_age(Duration::from_secs(600))
    }
}

fn is_public(path: &str) -> bool {
    path == "/health" || path == "/login" || path == "/favicon.ico" || path.starts_with("/pkg/")
}

/// Middleware: the Host and Origin allow-lists.
pub async fn check_host_and_origin(
    State(sec): State<Arc<Security>>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !sec.host_allowed(host) {
        let err = ApiError::Forbidden {
            code: "host_not_allowed",
            message: format!(
                "Host `{}` is not allowed; add it with --allowed-hosts",
                host.unwrap_or("")
            ),
        };
        return crate::routes::error_for_path(req.uri().path(), err);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| sec.origin_allowed(o, host));
        if !allowed {
            let err = ApiError::Forbidden {
                code: "origin_not_allowed",
                message: format!(
                    "Origin `{}` is not allowed; add it with --allowed-origins",
                    origin.to_str().unwrap_or("?")
                ),
            };
            return crate::routes::error_for_path(req.uri().path(), err);
        }
    }
    next.run(req).await
}

/// Middleware: the API key (Bearer header or session cookie).
pub async fn require_key(State(sec): State<Arc<Security>>, req: Request, next: Next) -> Response {
    if !sec.requires_key()
        || is_public(req.uri().path())
        || crate::routes::health::is_server_probe(&req)
        || sec.authorized(req.headers())
    {
        return next.run(req).await;
    }
    let wants_html = req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return Redirect::to("/login").into_response();
    }
    let mut resp = crate::routes::error_for_path(
        req.uri().path(),
        ApiError::Unauthorized(
            "a valid API key is required: send `Authorization: Bearer <key>`".into(),
        ),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"kinko\""),
    );
    resp
}

/// `GET /login` and `POST /login`.
pub fn login_router(sec: Arc<Security>) -> Router {
    Router::new()
        .route("/login", get(login_page).post(login))
        .with_state(sec)
}

/// The language and theme the page asked for (cookies), else the
/// browser's language: what the chat page and the login page render with.
pub fn page_prefs(headers: &axum::http::HeaderMap) -> (app::i18n::Lang, app::prefs::Theme) {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    app::prefs::from_request(header(header::COOKIE), header(header::ACCEPT_LANGUAGE))
}

/// The login page in the language and theme the request asks for, with
/// the refusal `error` picks from the strings, if any.
fn login_html(
    headers: &axum::http::HeaderMap,
    error: Option<&dyn Fn(&'static app::i18n::Text) -> String>,
) -> String {
    let (lang, theme) = page_prefs(headers);
    let t = lang.t();
    let error = error
        .map(|e| format!(r#"<p class="login-error" role="alert">{}</p>"#, e(t)))
        .unwrap_or_default();
    let theme = match theme {
        app::prefs::Theme::System => String::new(),
        th => format!(r#" data-theme="{}""#, th.code()),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="{code}"{theme}><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/pkg/kinko.css"></head>
<body><main class="login">
<form method="post" action="/login" class="login-card">
<h1><span class="logo" aria-hidden="true">金庫</span> kinko</h1>
<p>{needs}</p>
{error}
<label for="key">{api_key}</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<button type="submit" class="send">{sign_in}</button>
</form></main></body></html>"#,
        code = lang.code(),
        title = t.login_title,
        needs = t.login_needs_key,
        api_key = t.api_key,
        sign_in = t.sign_in,
    )
}

async fn login_page(State(sec): State<Arc<Security>>, headers: axum::http::HeaderMap) -> Response {
    if !sec.requires_key() {
        return Redirect::to("/").into_response();
    }
    Html(login_html(&headers, None)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(
    State(sec): State<Arc<Security>>,
    headers: axum::http::HeaderMap,
    client: Option<axum::Extension<axum::extract::ConnectInfo<crate::net::ClientConn>>>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Some(key) = &sec.api_key_digest else {
        return Redirect::to("/").into_response();
    };
    let ip = client
        .map(|c| c.0 .0.addr.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    if let Some(secs) = sec.locked_out(ip) {
        tracing::warn!(client = %ip, "login refused: too many wrong keys");
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            Html(login_html(
                &headers,
                Some(&|t| (t.locked_out)(&secs.div_ceil(60).to_string())),
            )),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return ApiError::invalid(format!(
                "send the key as a form field `key`: {}",
                rejection.body_text()
            ))
            .into_response()
        }
    };
    if !same_secret(form.key.trim(), key) {
        sec.failed_login(ip);
        // Slow down guessing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_html(&headers, Some(&|t| t.wrong_key.to_string()))),
        )
            .into_response();
    }
    sec.good_login(ip);
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000",
        sec.session_value
    );
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_accepts_only_local_hosts() {
        let s = Security::new(addr("127.0.0.1:3000"), None, &[], &[]);
        for ok in [
            "127.0.0.1:3000",
            "localhost:3000",
            "LOCALHOST",
            "[::1]:3000",
        ] {
            assert!(s.host_allowed(Some(ok)), "{ok}");
        }
        for bad in ["evil.example:3000", "127.0.0.1.nip.io:3000", "attacker"] {
            assert!(!s.host_allowed(Some(bad)), "{bad}");
        }
        let lan = Security::new(addr("0.0.0.0:3000"), Some("secret-key"), &[], &[]);
        assert!(lan.host_allowed(Some("my-box.lan:3000")));
    }

    #[test]
    fn origins_same_or_listed() {
        let s = Security::new(
            addr("127.0.0.1:3000"),
            None,
            &["http://localhost:5173/".into()],
            &[],
        );
        assert!(s.origin_allowed("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(s.origin_allowed("http://localhost:5173", Some("127.0.0.1:3000")));
        assert!(!s.origin_allowed("http://evil.example", Some("127.0.0.1:3000")));
        assert!(!s.origin_allowed("null", Some("127.0.0.1:3000")));
    }

    #[test]
    fn keys_bearer_and_cookie() {
        let s = Security::new(addr("127.0.0.1:3000"), Some("correct horse"), &[], &[]);
        let mut h = HeaderMap::new();
        assert!(!s.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wrong"),
        );
        assert!(!s.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer correct horse"),
        );
        assert!(s.authorized(&h));
        let mut c = HeaderMap::new();
        c.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={}", s.session_value)).unwrap(),
        );
        assert!(s.authorized(&c));
        c.insert(
            header::COOKIE,
            HeaderValue::from_static("kinko_session=forged"),
        );
        assert!(!s.authorized(&c));
    }
}
