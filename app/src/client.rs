//! Browser-only plumbing (compiled with `hydrate`): the streaming POST to
//! `/api/chat/stream` read as SSE, the model list, the Stop button's abort
//! controller, the clipboard, animation frames and the clock.

use crate::api::{
    ChatRequest, DeltaEvent, DoneEvent, ErrorBody, ErrorDetail, MetaEvent, ModelList,
};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::cell::RefCell;
use wasm_bindgen::JsCast;

/// One parsed event of the chat stream.
pub enum StreamEvent {
    /// `meta`.
    Meta(MetaEvent),
    /// `delta`.
    Delta(DeltaEvent),
    /// `done`.
    Done(DoneEvent),
    /// `error`.
    Error(ErrorDetail),
}

/// Why a stream could not be read to its end.
pub enum StreamFailure {
    /// Stop was pressed.
    Aborted,
    /// The server answered with an error status.
    Http(u16, String),
    /// The network or the stream broke.
    Network(String),
}

thread_local! {
    static CURRENT: RefCell<Option<web_sys::AbortController>> = const { RefCell::new(None) };
}

/// Abort the stream in flight, if any.
pub fn abort_current() {
    CURRENT.with(|c| {
        if let Some(controller) = c.borrow_mut().take() {
            controller.abort();
        }
    });
}

fn error_message(status: u16, body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => e.error.message,
        Err(_) if body.trim().is_empty() => format!("the server answered {status}"),
        Err(_) => format!("the server answered {status}: {}", body.trim()),
    }
}

/// POST `req` and feed each event to `on_event` until the stream ends.
pub async fn stream_chat(
    req: &ChatRequest,
    mut on_event: impl FnMut(StreamEvent),
) -> Result<(), StreamFailure> {
    abort_current();
    let controller =
        web_sys::AbortController::new().map_err(|e| StreamFailure::Network(format!("{e:?}")))?;
    let signal = controller.signal();
    CURRENT.with(|c| *c.borrow_mut() = Some(controller));
    let aborted = || signal.aborted();
    let result = async {
        let request = gloo_net::http::Request::post("/api/chat/stream")
            .header("Accept", "text/event-stream")
            .abort_signal(Some(&signal))
            .json(req)
            .map_err(|e| StreamFailure::Network(e.to_string()))?;
        let response = request.send().await.map_err(|e| {
            if aborted() {
                StreamFailure::Aborted
            } else {
                StreamFailure::Network(e.to_string())
            }
        })?;
        if !response.ok() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(StreamFailure::Http(status, error_message(status, &body)));
        }
        let body = response
            .body()
            .ok_or_else(|| StreamFailure::Network("the answer has no body".into()))?;
        let bytes = wasm_streams::ReadableStream::from_raw(body)
            .into_stream()
            .map(|chunk| {
                chunk
                    .map(|js| js_sys::Uint8Array::new(&js).to_vec())
                    .map_err(|e| format!("{e:?}"))
            });
        let mut events = Box::pin(bytes.eventsource());
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| {
                if aborted() {
                    StreamFailure::Aborted
                } else {
                    StreamFailure::Network(e.to_string())
                }
            })?;
            let parsed = match event.event.as_str() {
                "meta" => serde_json::from_str(&event.data).map(StreamEvent::Meta),
                "delta" => serde_json::from_str(&event.data).map(StreamEvent::Delta),
                "done" => serde_json::from_str(&event.data).map(StreamEvent::Done),
                "error" => serde_json::from_str(&event.data).map(StreamEvent::Error),
                _ => continue,
            };
            match parsed {
                Ok(ev) => on_event(ev),
                Err(e) => return Err(StreamFailure::Network(format!("bad event: {e}"))),
            }
        }
        if aborted() {
            Err(StreamFailure::Aborted)
        } else {
            Ok(())
        }
    }
    .await;
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref()
            .map(|ctl| ctl.signal() == signal)
            .unwrap_or(false)
        {
            *c = None;
        }
    });
    result
}

/// `GET /api/models`.
pub async fn fetch_models() -> Result<ModelList, String> {
    let response = gloo_net::http::Request::get("/api/models")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.ok() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(error_message(status, &body));
    }
    response
        .json::<ModelList>()
        .await
        .map_err(|e| e.to_string())
}

/// Milliseconds since 1970.
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// A high-resolution timestamp in milliseconds.
pub fn perf_now() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or_else(now_ms)
}

/// A new chat id: time plus randomness, unique across tabs.
pub fn new_id() -> String {
    format!(
        "c{:x}{:08x}",
        now_ms() as u64,
        (js_sys::Math::random() * f64::from(u32::MAX)) as u32
    )
}

/// Copy `text` to the clipboard.
pub fn copy_text(text: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let clipboard = js_sys::Reflect::get(&window.navigator(), &"clipboard".into());
    if let Ok(clipboard) = clipboard {
        if let Ok(write) = js_sys::Reflect::get(&clipboard, &"writeText".into()) {
            if let Some(write) = write.dyn_ref::<js_sys::Function>() {
                let _ = write.call1(&clipboard, &text.into());
            }
        }
    }
}

/// Run `f` after `ms` milliseconds.
pub fn after(ms: i32, f: impl FnOnce() + 'static) {
    let closure = wasm_bindgen::closure::Closure::once_into_js(f);
    if let Some(w) = web_sys::window() {
        let _ =
            w.set_timeout_with_callback_and_timeout_and_arguments_0(closure.unchecked_ref(), ms);
    }
}

/// Run `f` before the next repaint.
pub fn on_next_frame(f: impl FnOnce() + 'static) {
    let closure = wasm_bindgen::closure::Closure::once_into_js(f);
    if let Some(w) = web_sys::window() {
        let _ = w.request_animation_frame(closure.unchecked_ref());
    }
}

/// The localStorage value under `key`, if any.
pub fn local_item(key: &str) -> Option<String> {
    web_sys::window()?
        .local_storage()
        .ok()??
        .get_item(key)
        .ok()?
}

thread_local! {
    /// Per-delta timings, when the benchmark asked for them.
    static BENCH: RefCell<Option<Vec<f64>>> = const { RefCell::new(None) };
    /// When the batch of deltas being applied began.
    static DELTA_START: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// The benchmark asks for per-delta timings with `localStorage["kinko.bench"]`.
pub fn bench_start() {
    if local_item("kinko.bench").as_deref() == Some("1") {
        BENCH.with(|b| *b.borrow_mut() = Some(Vec::new()));
        let get = wasm_bindgen::closure::Closure::<dyn Fn() -> js_sys::Array>::new(|| {
            BENCH.with(|b| {
                b.borrow()
                    .iter()
                    .flatten()
                    .map(|v| wasm_bindgen::JsValue::from_f64(*v))
                    .collect()
            })
        });
        if let Some(w) = web_sys::window() {
            let _ = js_sys::Reflect::set(&w, &"kinkoDeltaTimes".into(), get.as_ref());
        }
        get.forget();
    }
}

/// A batch of deltas is being applied (start of its main-thread time).
pub fn bench_begin() {
    if BENCH.with(|b| b.borrow().is_some()) {
        DELTA_START.with(|s| s.set(Some(perf_now())));
    }
}

/// The streaming message has rendered the batch: record its time.
pub fn bench_end() {
    if let Some(start) = DELTA_START.with(|s| s.take()) {
        let ms = perf_now() - start;
        BENCH.with(|b| {
            if let Some(v) = b.borrow_mut().as_mut() {
                v.push(ms);
            }
        });
    }
}

const OPEN_CHAT_KEY: &str = "kinko.open";

/// Remember which chat this tab has open (sessionStorage: per tab, kept
/// over a reload).
pub fn remember_open_chat(id: Option<&str>) {
    if let Some(s) = web_sys::window().and_then(|w| w.session_storage().ok().flatten()) {
        let _ = match id {
            Some(id) => s.set_item(OPEN_CHAT_KEY, id),
            None => s.remove_item(OPEN_CHAT_KEY),
        };
    }
}

/// The chat this tab had open before a reload.
pub fn open_chat_of_this_tab() -> Option<String> {
    web_sys::window()?
        .session_storage()
        .ok()??
        .get_item(OPEN_CHAT_KEY)
        .ok()?
}

fn conversation() -> Option<web_sys::Element> {
    web_sys::window()?
        .document()?
        .query_selector("[data-testid=conversation]")
        .ok()?
}

/// Whether the reader is at (or near) the end of the conversation.
pub fn conversation_at_bottom() -> bool {
    conversation()
        .map(|el| el.scroll_height() - el.scroll_top() - el.client_height() < 120)
        .unwrap_or(false)
}

/// Whether the reader is at the top of the conversation.
pub fn conversation_near_top() -> bool {
    conversation()
        .map(|el| el.scroll_top() < 40)
        .unwrap_or(false)
}

/// The conversation's scroll height.
pub fn conversation_height() -> i32 {
    conversation().map(|el| el.scroll_height()).unwrap_or(0)
}

/// After earlier messages were added above, keep what the reader saw in place.
pub fn keep_scroll_after_growth(old_height: i32) {
    if let Some(el) = conversation() {
        el.set_scroll_top(el.scroll_top() + el.scroll_height() - old_height);
    }
}

/// Scroll to the end of the conversation.
pub fn scroll_conversation() {
    if let Some(el) = conversation() {
        el.set_scroll_top(el.scroll_height());
    }
}

/// A click in the conversation: when it was on a code block's Copy button,
/// copy that block's code.
pub fn copy_code_clicked(ev: &web_sys::MouseEvent, t: &'static crate::i18n::Text) {
    let Some(target) = ev
        .target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
    else {
        return;
    };
    let Some(button) = target.closest("[data-testid=copy-code]").ok().flatten() else {
        return;
    };
    let code = button
        .closest(".code-block")
        .ok()
        .flatten()
        .and_then(|block| block.query_selector("code").ok().flatten())
        .and_then(|code| code.text_content());
    if let Some(code) = code {
        copy_text(&code);
        button.set_text_content(Some(t.copied));
        after(1500, move || button.set_text_content(Some(t.copy)));
    }
}

/// Mark the page as hydrated, for tests: `<body data-hydrated="true">`.
pub fn mark_hydrated() {
    if let Some(body) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.body())
    {
        let _ = body.set_attribute("data-hydrated", "true");
    }
}

/// Hear the page's shortcuts; `handler` says whether it used the key (then
/// the browser's own action is prevented).
pub fn listen_for_shortcuts(handler: impl Fn(crate::page::Shortcut) -> bool + 'static) {
    use crate::page::Shortcut;
    let Some(window) = web_sys::window() else {
        return;
    };
    let listener = wasm_bindgen::closure::Closure::<dyn Fn(web_sys::KeyboardEvent)>::new(
        move |ev: web_sys::KeyboardEvent| {
            if ev.default_prevented() || ev.is_composing() {
                return;
            }
            let ctrl = ev.ctrl_key() || ev.meta_key();
            let key = ev.key().to_lowercase();
            let shortcut = match (ctrl, ev.shift_key(), key.as_str()) {
                (true, true, "o") => Shortcut::NewChat,
                (true, false, "k") => Shortcut::Search,
                (true, _, "/") => Shortcut::Help,
                (false, _, "escape") => Shortcut::Escape,
                _ => return,
            };
            if handler(shortcut) {
                ev.prevent_default();
            }
        },
    );
    let _ = window.add_event_listener_with_callback("keydown", listener.as_ref().unchecked_ref());
    // The page lives as long as the listener.
    listener.forget();
}

/// Focus the element `selector` finds.
pub fn focus(selector: &str) {
    let el = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.query_selector(selector).ok().flatten())
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok());
    if let Some(el) = el {
        let _ = el.focus();
    }
}

/// A file's bytes, when it is at most `cap` bytes long.
pub async fn file_bytes(file: &web_sys::File, cap: usize) -> Option<Vec<u8>> {
    if file.size() > cap as f64 {
        return None;
    }
    let buffer = wasm_bindgen_futures::JsFuture::from(file.array_buffer())
        .await
        .ok()?;
    Some(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// A file's text.
pub async fn file_text(file: &web_sys::File) -> Option<String> {
    wasm_bindgen_futures::JsFuture::from(file.text())
        .await
        .ok()?
        .as_string()
}

/// Offer `text` as a download named `name`.
pub fn download(name: &str, mime: &str, text: &str) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(text));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(&format!("{mime};charset=utf-8"));
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options) else {
        return;
    };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else {
        return;
    };
    if let Some(a) = document
        .create_element("a")
        .ok()
        .and_then(|a| a.dyn_into::<web_sys::HtmlAnchorElement>().ok())
    {
        a.set_href(&url);
        a.set_download(name);
        a.click();
    }
    after(10_000, move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
}

/// `kinko-chats-2026-11-21.json`: a name with today's date.
pub fn dated_name(prefix: &str, extension: &str) -> String {
    let iso = js_sys::Date::new_0().to_iso_string();
    let day: String = String::from(iso).chars().take(10).collect();
    format!("{prefix}-{day}.{extension}")
}

/// A date and time for people in `locale`, in the browser's time zone.
pub fn locale_date(ms: f64, locale: &str) -> String {
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"dateStyle".into(), &"medium".into());
    let _ = js_sys::Reflect::set(&options, &"timeStyle".into(), &"short".into());
    js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms))
        .to_locale_string(locale, &options)
        .into()
}

/// Remember a preference in localStorage and in a cookie (so the server
/// renders the next page with it).
pub fn remember_pref(key: &str, value: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    if let Ok(Some(storage)) = window.local_storage() {
        let _ = storage.set_item(key, value);
    }
    if let Some(doc) = window
        .document()
        .and_then(|d| d.dyn_into::<web_sys::HtmlDocument>().ok())
    {
        let _ = doc.set_cookie(&format!(
            "{key}={value}; path=/; max-age=31536000; SameSite=Lax"
        ));
    }
}

/// The value of cookie `name` (`document.cookie`).
pub fn cookie(name: &str) -> Option<String> {
    let all = web_sys::window()?
        .document()?
        .dyn_into::<web_sys::HtmlDocument>()
        .ok()?
        .cookie()
        .ok()?;
    crate::prefs::cookie(&all, name).map(str::to_string)
}

/// The browser's preferred language tag (`navigator.language`).
pub fn browser_language() -> Option<String> {
    web_sys::window()?.navigator().language()
}

/// An attribute of `<html>`.
pub fn html_attribute(name: &str) -> Option<String> {
    web_sys::window()?
        .document()?
        .document_element()?
        .get_attribute(name)
}

/// Set (or, for `None`, remove) an attribute of `<html>`.
pub fn set_html_attribute(name: &str, value: Option<&str>) {
    if let Some(el) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.document_element())
    {
        let _ = match value {
            Some(v) => el.set_attribute(name, v),
            None => el.remove_attribute(name),
        };
    }
}
