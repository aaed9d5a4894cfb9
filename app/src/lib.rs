//! kinko's user interface: one chat page, rendered on the server and
//! hydrated in the browser. The conversation lives in the browser
//! (localStorage) and is sent whole each turn; answers stream in as SSE.

pub mod api;
#[cfg(feature = "hydrate")]
mod client;
pub mod context_size;

use api::{ChatMessage, ChatOptions, ChatRequest, ModelPromptCost, ModelSummary, Role};
use context_size::ContextPicker;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::StaticSegment;
use serde::{Deserialize, Serialize};

/// The HTML document around the app (server side).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application root.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/kinko.css"/>
        <Title text="kinko"/>
        <Router>
            <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                <Route path=StaticSegment("") view=ChatPage/>
            </Routes>
        </Router>
    }
}

/// localStorage key of the conversation.
pub const STORAGE_KEY: &str = "kinko.chat.v1";

/// A message as the UI keeps it: the text plus what happened to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UiMessage {
    /// Who wrote it.
    pub role: Option<Role>,
    /// The text so far.
    pub content: String,
    /// Still streaming.
    #[serde(default)]
    pub pending: bool,
    /// An error shown under the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A note shown under the message (trimmed history, stopped, length).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What is saved in localStorage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedChat {
    /// The model last picked.
    pub model: Option<String>,
    /// The chat's context size (`num_ctx`), when not the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<usize>,
    /// The conversation.
    pub messages: Vec<UiMessage>,
}

/// The history to send: every user message and every assistant answer with
/// text, oldest first.
pub fn history_for_request(messages: &[UiMessage]) -> Vec<ChatMessage> {
    messages
        .iter()
        .filter_map(|m| match m.role {
            Some(role) if !m.content.trim().is_empty() => {
                Some(ChatMessage::new(role, m.content.clone()))
            }
            _ => None,
        })
        .collect()
}

/// A file size for people: `145 MB`, `1.2 GB` (`—` for unknown).
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.1} GB", bytes as f64 / 1e9)
    } else if bytes > 0 {
        format!("{} MB", bytes.div_ceil(1_000_000))
    } else {
        "—".into()
    }
}

fn model_label(m: &ModelSummary) -> String {
    format!(
        "{} · {} · {} · {}k ctx",
        m.name,
        m.quantization,
        human_size(m.size),
        m.context_length / 1024
    )
}

/// The chat page: model picker, conversation, composer.
#[component]
fn ChatPage() -> impl IntoView {
    let models = RwSignal::new(Vec::<ModelSummary>::new());
    let models_error = RwSignal::new(None::<String>);
    let model = RwSignal::new(String::new());
    let messages = RwSignal::new(Vec::<UiMessage>::new());
    let input = RwSignal::new(String::new());
    let streaming = RwSignal::new(false);
    let loaded = RwSignal::new(false);
    let num_ctx = RwSignal::new(None::<usize>);
    let default_num_ctx = RwSignal::new(0usize);
    let costs = RwSignal::new(Vec::<ModelPromptCost>::new());
    let conversation_ref = NodeRef::<leptos::html::Div>::new();

    // Client only: restore the conversation, fetch the models, mark hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        {
            if let Some(saved) = client::load(STORAGE_KEY)
                .and_then(|text| serde_json::from_str::<SavedChat>(&text).ok())
            {
                let mut restored = saved.messages;
                for m in restored.iter_mut().filter(|m| m.pending) {
                    m.pending = false;
                    m.notes.push("Interrupted by a page reload.".into());
                }
                messages.set(restored);
                if let Some(m) = saved.model {
                    model.set(m);
                }
                num_ctx.set(saved.num_ctx);
            }
            loaded.set(true);
            leptos::task::spawn_local(async move {
                match client::fetch_models().await {
                    Ok(list) => {
                        let current = model.get_untracked();
                        if !list.models.iter().any(|m| m.name == current) {
                            model.set(
                                list.models
                                    .first()
                                    .map(|m| m.name.clone())
                                    .unwrap_or_default(),
                            );
                        }
                        default_num_ctx.set(list.default_num_ctx);
                        costs.set(list.prompt_costs);
                        if list.models.is_empty() {
                            models_error.set(Some("No models installed. Run `kinko import NAME FILE.gguf` or the set-up command.".into()));
                        }
                        models.set(list.models);
                    }
                    Err(e) => models_error.set(Some(format!("Could not list models: {e}"))),
                }
                client::mark_hydrated();
            });
        }
    });

    // Client only: save every change, and keep the newest text in view.
    Effect::new(move |_| {
        let saved = SavedChat {
            model: Some(model.get()).filter(|m| !m.is_empty()),
            num_ctx: num_ctx.get(),
            messages: messages.get(),
        };
        if !loaded.get_untracked() {
            return;
        }
        #[cfg(feature = "hydrate")]
        if let Ok(text) = serde_json::to_string(&saved) {
            client::save(STORAGE_KEY, &text);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = saved;
        if let Some(el) = conversation_ref.get() {
            el.set_scroll_top(el.scroll_height());
        }
    });

    let send = move || {
        let text = input.get_untracked();
        if text.trim().is_empty() || streaming.get_untracked() {
            return;
        }
        let model_name = model.get_untracked();
        if model_name.is_empty() {
            messages.update(|m| {
                m.push(UiMessage {
                    role: None,
                    error: Some("Pick a model first.".into()),
                    ..Default::default()
                })
            });
            return;
        }
        input.set(String::new());
        messages.update(|m| {
            m.push(UiMessage {
                role: Some(Role::User),
                content: text,
                ..Default::default()
            });
        });
        let request = ChatRequest {
            model: model_name,
            messages: history_for_request(&messages.get_untracked()),
            options: ChatOptions {
                num_ctx: num_ctx.get_untracked(),
                ..ChatOptions::default()
            },
        };
        messages.update(|m| {
            m.push(UiMessage {
                role: Some(Role::Assistant),
                pending: true,
                ..Default::default()
            })
        });
        streaming.set(true);
        start_stream(request, messages, streaming, costs);
    };

    let stop = move |_| {
        #[cfg(feature = "hydrate")]
        client::abort_current();
    };

    let new_chat = move |_| {
        #[cfg(feature = "hydrate")]
        client::abort_current();
        messages.set(Vec::new());
        input.set(String::new());
        num_ctx.set(None);
    };

    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        // Enter sends; Shift+Enter is a newline; Enter that commits an IME
        // composition (Japanese input) never sends.
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() && ev.key_code() != 229 {
            ev.prevent_default();
            send();
        }
    };

    view! {
        <div class="app">
            <header class="topbar">
                <div class="brand">
                    <span class="logo" aria-hidden="true">"金庫"</span>
                    <span class="name">"kinko"</span>
                </div>
                <label class="picker">
                    <span class="visually-hidden">"Model"</span>
                    <select
                        data-testid="model-picker"
                        aria-label="Model"
                        on:change=move |ev| model.set(event_target_value(&ev))
                        prop:value=move || model.get()
                    >
                        {move || {
                            let list = models.get();
                            if list.is_empty() {
                                view! { <option value="">"Loading models…"</option> }.into_any()
                            } else {
                                list.into_iter()
                                    .map(|m| {
                                        let name = m.name.clone();
                                        let selected = name == model.get_untracked();
                                        view! {
                                            <option value=name selected=selected>{model_label(&m)}</option>
                                        }
                                    })
                                    .collect_view()
                                    .into_any()
                            }
                        }}
                    </select>
                </label>
                <ContextPicker models=models model=model chosen=num_ctx server_default=default_num_ctx costs=costs/>
                <button class="new-chat" data-testid="new-chat" on:click=new_chat title="Start a new conversation">
                    "New chat"
                </button>
            </header>
            {move || models_error.get().map(|e| view! { <div class="banner error" role="alert">{e}</div> })}
            <div class="conversation" data-testid="conversation" node_ref=conversation_ref aria-live="polite">
                <Show
                    when=move || !messages.with(Vec::is_empty)
                    fallback=|| view! {
                        <div class="empty">
                            <p class="empty-title">"A private chat that stays on this machine."</p>
                            <p>"Pick a model, type a message, press Enter."</p>
                        </div>
                    }
                >
                    {move || messages.get().into_iter().map(message_view).collect_view()}
                </Show>
            </div>
            <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
                <textarea
                    data-testid="composer"
                    rows="2"
                    placeholder="Message kinko… (Enter to send, Shift+Enter for a new line)"
                    prop:value=move || input.get()
                    on:input=move |ev| input.set(event_target_value(&ev))
                    on:keydown=on_keydown
                ></textarea>
                <Show
                    when=move || streaming.get()
                    fallback=move || view! {
                        <button type="submit" class="send" data-testid="send"
                            disabled=move || input.with(|t| t.trim().is_empty())>"Send"</button>
                    }
                >
                    <button type="button" class="stop" data-testid="stop" on:click=stop>"Stop"</button>
                </Show>
            </form>
        </div>
    }
}

fn message_view(m: UiMessage) -> impl IntoView {
    let role = m.role.map(Role::as_str).unwrap_or("notice");
    let class = format!("msg {role}{}", if m.pending { " pending" } else { "" });
    let notes = m.notes.clone();
    view! {
        <div class=class data-role=role>
            <div class="bubble">
                {m.content.clone()}
                {m.pending.then(|| view! { <span class="cursor" aria-hidden="true"></span> })}
            </div>
            {notes.into_iter().map(|n| view! { <div class="note" data-testid="note">{n}</div> }).collect_view()}
            {m.error.map(|e| view! { <div class="error" role="alert" data-testid="error">{e}</div> })}
        </div>
    }
}

#[cfg(feature = "hydrate")]
fn start_stream(
    request: ChatRequest,
    messages: RwSignal<Vec<UiMessage>>,
    streaming: RwSignal<bool>,
    costs: RwSignal<Vec<ModelPromptCost>>,
) {
    use api::FinishReason;
    use client::{StreamEvent, StreamFailure};
    let update_last = move |f: &dyn Fn(&mut UiMessage)| {
        messages.update(|m| {
            if let Some(last) = m.last_mut() {
                f(last);
            }
        })
    };
    leptos::task::spawn_local(async move {
        let result = client::stream_chat(&request, |event| match event {
            StreamEvent::Meta(meta) => {
                if meta.trimmed_messages > 0 && meta.trimmed_for_time {
                    let note = format!(
                        "{} earlier message{} left out so the model reads this conversation within the time limit on this machine ({} prompt tokens). A smaller context size answers sooner; a bigger one remembers more.",
                        meta.trimmed_messages,
                        if meta.trimmed_messages == 1 { " was" } else { "s were" },
                        meta.prompt_tokens,
                    );
                    update_last(&|m| m.notes.push(note.clone()));
                } else if meta.trimmed_messages > 0 {
                    let note = format!(
                        "{} earlier message{} left out: the model saw only the latest part of this conversation ({} prompt tokens of its {}-token window).",
                        meta.trimmed_messages,
                        if meta.trimmed_messages == 1 { " was" } else { "s were" },
                        meta.prompt_tokens,
                        meta.context_window
                    );
                    update_last(&|m| m.notes.push(note.clone()));
                }
            }
            StreamEvent::Delta(delta) => update_last(&|m| m.content.push_str(&delta.text)),
            StreamEvent::Done(done) => update_last(&|m| {
                m.pending = false;
                match done.finish_reason {
                    FinishReason::Length => m
                        .notes
                        .push(format!("Stopped at the {}-token limit.", done.usage.completion_tokens)),
                    FinishReason::Timeout => m.notes.push("Timed out.".into()),
                    FinishReason::Cancelled => m.notes.push("Stopped.".into()),
                    FinishReason::Stop | FinishReason::Error => {}
                }
            }),
            StreamEvent::Error(e) => update_last(&|m| {
                m.pending = false;
                m.error = Some(e.message.clone());
            }),
        })
        .await;
        update_last(&|m| {
            m.pending = false;
            match &result {
                Ok(()) => {}
                Err(StreamFailure::Aborted) => m.notes.push("Stopped.".into()),
                Err(StreamFailure::Http(status, msg)) => {
                    m.error = Some(format!("{msg} (HTTP {status})"))
                }
                Err(StreamFailure::Network(msg)) => {
                    m.error = Some(format!("The connection broke: {msg}"))
                }
            }
        });
        streaming.set(false);
        // The answer taught the server more about its prompt speed.
        if let Ok(list) = client::fetch_models().await {
            costs.set(list.prompt_costs);
        }
    });
}

#[cfg(not(feature = "hydrate"))]
fn start_stream(
    _: ChatRequest,
    _: RwSignal<Vec<UiMessage>>,
    _: RwSignal<bool>,
    _: RwSignal<Vec<ModelPromptCost>>,
) {
    // Event handlers only run in the browser.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_skips_notices_and_empty_answers() {
        let msgs = vec![
            UiMessage {
                role: Some(Role::User),
                content: "hi".into(),
                ..Default::default()
            },
            UiMessage {
                role: Some(Role::Assistant),
                content: "".into(),
                error: Some("x".into()),
                ..Default::default()
            },
            UiMessage {
                role: None,
                error: Some("Pick a model first.".into()),
                ..Default::default()
            },
            UiMessage {
                role: Some(Role::User),
                content: "again".into(),
                ..Default::default()
            },
        ];
        let h = history_for_request(&msgs);
        assert_eq!(
            h,
            vec![
                ChatMessage::new(Role::User, "hi"),
                ChatMessage::new(Role::User, "again")
            ]
        );
    }

    #[test]
    fn saved_chat_round_trips() {
        let saved = SavedChat {
            model: Some("smollm2:135m".into()),
            num_ctx: Some(8192),
            messages: vec![UiMessage {
                role: Some(Role::User),
                content: "こんにちは".into(),
                ..Default::default()
            }],
        };
        let text = serde_json::to_string(&saved).unwrap();
        assert_eq!(serde_json::from_str::<SavedChat>(&text).unwrap(), saved);
    }
}
