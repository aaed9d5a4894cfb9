//! Browser-only plumbing (compiled with `hydrate`): the streaming POST to
//! `/api/chat/stream` read as SSE, the model list, the Stop button's abort
//! controller, and the conversation kept in localStorage.

use crate::api::{
    ChatRequest, DeltaEvent, DoneEvent, ErrorBody, ErrorDetail, MetaEvent, ModelList,
};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::cell::RefCell;

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

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// Read a value saved under `key`.
pub fn load(key: &str) -> Option<String> {
    storage()?.get_item(key).ok()?
}

/// Save `value` under `key` (quietly does nothing where storage is off).
pub fn save(key: &str, value: &str) {
    if let Some(s) = storage() {
        let _ = s.set_item(key, value);
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
