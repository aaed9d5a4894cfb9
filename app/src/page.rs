//! The chat page: the sidebar of conversations, the model picker, the open
//! conversation and the composer. Conversations live in the browser
//! (IndexedDB, one record each); the open one is sent whole each turn and
//! its answer streams in as SSE.

use crate::api::{ChatOptions, ChatRequest, ModelPromptCost, ModelSummary, Role};
use crate::chats::{history_for_request, sort_summaries, Chat, ChatSummary, UiMessage};
use crate::context_size::ContextPicker;
use crate::message::{LiveMessage, MessageView};
use crate::sidebar::{Sidebar, SidebarActions};
use leptos::prelude::*;
use std::collections::HashMap;

/// Messages rendered at once; earlier ones come in as the reader scrolls up.
const WINDOW: usize = 80;
/// While an answer streams, its chat is saved at most this often.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const SAVE_EVERY_MS: f64 = 500.0;

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

/// The model a new chat starts on: the server's default when installed,
/// else the first.
pub fn starting_model(models: &[ModelSummary], server_default: &str) -> String {
    models
        .iter()
        .find(|m| m.name == server_default)
        .or_else(|| models.first())
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// Everything the page's handlers share. All fields are `Copy` handles.
#[derive(Clone, Copy)]
struct Page {
    models: RwSignal<Vec<ModelSummary>>,
    default_model: RwSignal<String>,
    model: RwSignal<String>,
    num_ctx: RwSignal<Option<usize>>,
    costs: RwSignal<Vec<ModelPromptCost>>,
    live: RwSignal<Vec<LiveMessage>>,
    current: RwSignal<Option<String>>,
    /// Every stored chat by id (not reactive: `summaries` is).
    library: StoredValue<HashMap<String, Chat>>,
    summaries: RwSignal<Vec<ChatSummary>>,
    /// The chat an answer is streaming into.
    streaming: RwSignal<Option<String>>,
    storage_error: RwSignal<Option<String>>,
    /// The chat deleted last, and whether it was open, while undo lasts.
    deleted: RwSignal<Option<(Chat, bool)>>,
    window_from: RwSignal<usize>,
    last_save: StoredValue<f64>,
}

impl Page {
    fn refresh_summaries(&self) {
        let mut list: Vec<ChatSummary> = self
            .library
            .with_value(|l| l.values().map(Chat::summary).collect());
        sort_summaries(&mut list);
        self.summaries.set(list);
    }

    /// The stored form of chat `id` with these messages.
    fn build(&self, id: &str, messages: Vec<UiMessage>) -> Option<Chat> {
        let mut chat = self.library.with_value(|l| l.get(id).cloned())?;
        chat.messages = messages;
        Some(chat)
    }

    /// Keep `chat` in the library (and the sidebar).
    fn remember(&self, chat: &Chat) {
        let old_key = self.library.with_value(|l| {
            l.get(&chat.id)
                .map(|c| (c.display_title(), c.pinned, c.updated))
        });
        let new_key = (chat.display_title(), chat.pinned, chat.updated);
        self.library.update_value(|l| {
            l.insert(chat.id.clone(), chat.clone());
        });
        if old_key.as_ref() != Some(&new_key) {
            self.refresh_summaries();
        }
        self.last_save.set_value(now());
    }

    /// Keep `chat` in the library and write it (only it) to IndexedDB.
    fn commit(&self, chat: Chat) {
        self.remember(&chat);
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(write(self.storage_error, chat));
    }

    /// Change the open chat's settings (model, context size) when they
    /// differ from what is stored.
    fn save_settings(&self) {
        let Some(id) = self.current.get_untracked() else {
            return;
        };
        let model = Some(self.model.get_untracked()).filter(|m| !m.is_empty());
        let num_ctx = self.num_ctx.get_untracked();
        let Some(mut chat) = self.library.with_value(|l| l.get(&id).cloned()) else {
            return;
        };
        if chat.model == model && chat.num_ctx == num_ctx {
            return;
        }
        chat.model = model;
        chat.num_ctx = num_ctx;
        self.commit(chat);
    }

    fn stop_stream(&self) {
        #[cfg(feature = "hydrate")]
        crate::client::abort_current();
    }

    /// Put `chat`'s messages and settings on the page (an empty new chat
    /// for `None`), rendering at least the last `keep` messages.
    fn load(&self, chat: Option<&Chat>, keep: usize) {
        let messages: Vec<LiveMessage> = chat
            .map(|c| {
                c.messages
                    .iter()
                    .cloned()
                    .map(LiveMessage::from_saved)
                    .collect()
            })
            .unwrap_or_default();
        self.window_from.set(messages.len().saturating_sub(keep));
        self.live.set(messages);
        let model = chat.and_then(|c| c.model.clone()).unwrap_or_else(|| {
            starting_model(
                &self.models.get_untracked(),
                &self.default_model.get_untracked(),
            )
        });
        self.model.set(model);
        self.num_ctx.set(chat.and_then(|c| c.num_ctx));
    }

    fn show(&self, chat: Option<&Chat>) {
        self.stop_stream();
        self.load(chat, WINDOW);
        self.current.set(chat.map(|c| c.id.clone()));
        #[cfg(feature = "hydrate")]
        crate::client::remember_open_chat(chat.map(|c| c.id.as_str()));
        scroll_to_bottom();
    }

    fn open(&self, id: &str) {
        if let Some(chat) = self.library.with_value(|l| l.get(id).cloned()) {
            self.show(Some(&chat));
        }
    }

    fn delete(&self, id: &str) {
        let Some(chat) = self.library.try_update_value(|l| l.remove(id)).flatten() else {
            return;
        };
        let was_open = self.current.get_untracked().as_deref() == Some(id);
        if was_open {
            self.show(None);
        }
        self.refresh_summaries();
        self.deleted.set(Some((chat, was_open)));
        #[cfg(feature = "hydrate")]
        {
            let id = id.to_string();
            let (deleted, gone) = (self.deleted, id.clone());
            // Undo is offered for ten seconds.
            crate::client::after(10_000, move || {
                if deleted
                    .with_untracked(|d| d.as_ref().map(|(c, _)| c.id == gone).unwrap_or(false))
                {
                    deleted.set(None);
                }
            });
            let storage_error = self.storage_error;
            leptos::task::spawn_local(async move {
                if let Some(db) = crate::store::db() {
                    match db.delete(&id).await {
                        Ok(()) => crate::store::post(&crate::store::Change::Delete { id }),
                        Err(e) => storage_error.set(Some(format!(
                            "The chat could not be deleted from the browser's storage ({e})."
                        ))),
                    }
                }
            });
        }
    }

    /// Another tab changed chat `id` (`None`: deleted it).
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn heard(&self, id: &str, chat: Option<Chat>) {
        let open = self.current.get_untracked().as_deref() == Some(id);
        match chat {
            Some(chat) => {
                self.library.update_value(|l| {
                    l.insert(chat.id.clone(), chat.clone());
                });
                if open && self.streaming.get_untracked().is_none() {
                    let shown =
                        self.live.with_untracked(Vec::len) - self.window_from.get_untracked();
                    self.load(Some(&chat), shown.max(WINDOW));
                }
            }
            None => {
                self.library.update_value(|l| {
                    l.remove(id);
                });
                if open {
                    self.show(None);
                }
            }
        }
        self.refresh_summaries();
    }
}

/// Write one chat to IndexedDB and tell the other tabs; a failure is shown.
#[cfg(feature = "hydrate")]
async fn write(storage_error: RwSignal<Option<String>>, chat: Chat) {
    let Some(db) = crate::store::db() else {
        return;
    };
    match db.put(&chat).await {
        Ok(()) => {
            storage_error.set(None);
            crate::store::post(&crate::store::Change::Put { id: chat.id });
        }
        Err(e) => storage_error.set(Some(format!(
            "This chat could not be saved in the browser ({e}). Nothing saved before is lost, and this tab keeps the chat; it is saved again with the next change. Free some disk space or delete old chats."
        ))),
    }
}

/// The stored form of these messages now.
fn snapshot(messages: &[LiveMessage]) -> Vec<UiMessage> {
    messages.iter().map(LiveMessage::snapshot).collect()
}

fn now() -> f64 {
    #[cfg(feature = "hydrate")]
    return crate::client::now_ms();
    #[cfg(not(feature = "hydrate"))]
    0.0
}

fn scroll_to_bottom() {
    #[cfg(feature = "hydrate")]
    crate::client::on_next_frame(crate::client::scroll_conversation);
}

/// The chat page.
#[component]
pub fn ChatPage() -> AnyView {
    let page = Page {
        models: RwSignal::new(Vec::new()),
        default_model: RwSignal::new(String::new()),
        model: RwSignal::new(String::new()),
        num_ctx: RwSignal::new(None),
        costs: RwSignal::new(Vec::new()),
        live: RwSignal::new(Vec::new()),
        current: RwSignal::new(None),
        library: StoredValue::new(HashMap::new()),
        summaries: RwSignal::new(Vec::new()),
        streaming: RwSignal::new(None),
        storage_error: RwSignal::new(None),
        deleted: RwSignal::new(None),
        window_from: RwSignal::new(0),
        last_save: StoredValue::new(0.0),
    };
    let models_error = RwSignal::new(None::<String>);
    let input = RwSignal::new(String::new());
    let default_num_ctx = RwSignal::new(0usize);
    let query = RwSignal::new(String::new());
    let drawer = RwSignal::new(false);
    let Page {
        models,
        model,
        num_ctx,
        costs,
        live,
        current,
        streaming,
        storage_error,
        window_from,
        ..
    } = page;

    // Client only: open the store (migrating the old conversation), reopen
    // the chat this tab had open, fetch the models, mark hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            crate::client::bench_start();
            match crate::store::open().await {
                Ok(db) => {
                    if let Err(e) = db.migrate_legacy(now()).await {
                        storage_error.set(Some(e));
                    }
                    match db.all().await {
                        Ok(chats) => page.library.update_value(|l| {
                            l.extend(chats.into_iter().map(|c| (c.id.clone(), c)))
                        }),
                        Err(e) => storage_error.set(Some(format!("Saved chats could not be read ({e})."))),
                    }
                    crate::store::set_db(db);
                }
                Err(e) => storage_error.set(Some(format!(
                    "Chats cannot be saved in this browser ({e}); private windows often forbid it. This chat lasts until the tab closes."
                ))),
            }
            page.refresh_summaries();
            crate::store::listen(move |change| {
                leptos::task::spawn_local(async move {
                    match change {
                        crate::store::Change::Put { id } => {
                            if let Some(db) = crate::store::db() {
                                if let Ok(Some(chat)) = db.get(&id).await {
                                    page.heard(&id, Some(chat));
                                }
                            }
                        }
                        crate::store::Change::Delete { id } => page.heard(&id, None),
                    }
                });
            });
            match crate::client::fetch_models().await {
                Ok(list) => {
                    page.default_model.set(list.default_model.clone());
                    default_num_ctx.set(list.default_num_ctx);
                    costs.set(list.prompt_costs);
                    if list.models.is_empty() {
                        models_error.set(Some("No models installed. Run `kinko import NAME FILE.gguf` or the set-up command.".into()));
                    }
                    models.set(list.models);
                }
                Err(e) => models_error.set(Some(format!("Could not list models: {e}"))),
            }
            let reopen = crate::client::open_chat_of_this_tab()
                .and_then(|id| page.library.with_value(|l| l.get(&id).cloned()));
            page.show(reopen.as_ref());
            crate::client::mark_hydrated();
        });
    });

    // The open chat remembers its model and context size.
    Effect::new(move |first: Option<()>| {
        model.track();
        num_ctx.track();
        if first.is_some() {
            page.save_settings();
        }
    });

    let send = move || {
        let text = input.get_untracked();
        if text.trim().is_empty() || streaming.get_untracked().is_some() {
            return;
        }
        let model_name = model.get_untracked();
        if model_name.is_empty() {
            live.update(|m| {
                m.push(LiveMessage::from_saved(UiMessage {
                    role: None,
                    error: Some("Pick a model first.".into()),
                    ..Default::default()
                }))
            });
            return;
        }
        input.set(String::new());
        let id = match current.get_untracked() {
            Some(id) => id,
            None => {
                #[cfg(feature = "hydrate")]
                let id = crate::client::new_id();
                #[cfg(not(feature = "hydrate"))]
                let id = String::new();
                let mut chat = Chat::new(id.clone(), Some(model_name.clone()), now());
                chat.num_ctx = num_ctx.get_untracked();
                page.library.update_value(|l| {
                    l.insert(id.clone(), chat);
                });
                current.set(Some(id.clone()));
                #[cfg(feature = "hydrate")]
                crate::client::remember_open_chat(Some(&id));
                id
            }
        };
        page.library.update_value(|l| {
            if let Some(c) = l.get_mut(&id) {
                c.updated = now();
            }
        });
        live.update(|m| {
            m.push(LiveMessage::from_saved(UiMessage {
                role: Some(Role::User),
                content: text,
                ..Default::default()
            }))
        });
        let mut stored = live.with_untracked(|m| snapshot(m));
        let request = ChatRequest {
            model: model_name,
            messages: history_for_request(&stored),
            options: ChatOptions {
                num_ctx: num_ctx.get_untracked(),
                ..ChatOptions::default()
            },
        };
        let answer = LiveMessage::from_saved(UiMessage {
            role: Some(Role::Assistant),
            pending: true,
            ..Default::default()
        });
        live.update(|m| m.push(answer.clone()));
        stored.push(answer.snapshot());
        if let Some(chat) = page.build(&id, stored) {
            page.commit(chat);
        }
        streaming.set(Some(id.clone()));
        scroll_to_bottom();
        start_stream(page, id, live.get_untracked(), request, answer);
    };

    let actions = SidebarActions {
        open: Callback::new(move |id: String| {
            drawer.set(false);
            if current.get_untracked().as_deref() != Some(id.as_str()) {
                page.open(&id);
            }
        }),
        new_chat: Callback::new(move |_| {
            drawer.set(false);
            input.set(String::new());
            page.show(None);
        }),
        rename: Callback::new(move |(id, title): (String, String)| {
            if let Some(mut chat) = page.library.with_value(|l| l.get(&id).cloned()) {
                let title = title.trim().to_string();
                chat.renamed = !title.is_empty();
                chat.title = title;
                page.commit(chat);
            }
        }),
        pin: Callback::new(move |id: String| {
            if let Some(mut chat) = page.library.with_value(|l| l.get(&id).cloned()) {
                chat.pinned = !chat.pinned;
                page.commit(chat);
            }
        }),
        delete: Callback::new(move |id: String| page.delete(&id)),
        undo: Callback::new(move |_| {
            if let Some((chat, was_open)) = page.deleted.get_untracked() {
                page.deleted.set(None);
                page.commit(chat.clone());
                if was_open
                    && current.get_untracked().is_none()
                    && live.with_untracked(Vec::is_empty)
                {
                    page.show(Some(&chat));
                }
            }
        }),
    };
    let deleted_title = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        deleted_title.set(
            page.deleted
                .with(|d| d.as_ref().map(|(c, _)| c.display_title())),
        );
    });
    let shown_chats = Signal::derive(move || {
        let q = query.get().trim().to_lowercase();
        let list = page.summaries.get();
        if q.is_empty() {
            return list;
        }
        page.library.with_value(|l| {
            list.into_iter()
                .filter(|s| l.get(&s.id).map(|c| c.matches(&q)).unwrap_or(false))
                .collect()
        })
    });

    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        // Enter sends; Shift+Enter is a newline; Enter that commits an IME
        // composition (Japanese input) never sends.
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() && ev.key_code() != 229 {
            ev.prevent_default();
            send();
        }
    };

    let on_scroll = move |_| {
        #[cfg(feature = "hydrate")]
        if window_from.get_untracked() > 0 && crate::client::conversation_near_top() {
            show_earlier(window_from);
        }
    };

    let on_conversation_click = move |_ev: leptos::ev::MouseEvent| {
        #[cfg(feature = "hydrate")]
        crate::client::copy_code_clicked(&_ev);
    };

    let visible = move || {
        live.with(|m| {
            let from = window_from.get().min(m.len());
            m[from..].to_vec()
        })
    };

    view! {
        <div class="app">
            <Sidebar chats=shown_chats current=current query=query drawer=drawer deleted=deleted_title actions=actions/>
            <main class="main">
                {view! { <header class="topbar">
                    <button type="button" class="icon menu" data-testid="sidebar-toggle" aria-label="Chats"
                        on:click=move |_| drawer.update(|d| *d = !*d)>
                        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
                            <path d="M4 6h16M4 12h16M4 18h16" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"></path>
                        </svg>
                    </button>
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
                                let chosen = model.get();
                                if list.is_empty() {
                                    return view! { <option value="">"Loading models…"</option> }.into_any();
                                }
                                let missing = (!chosen.is_empty() && !list.iter().any(|m| m.name == chosen))
                                    .then(|| view! { <option value=chosen.clone()>{format!("{chosen} (not installed)")}</option> });
                                view! {
                                    {missing}
                                    {list.into_iter()
                                        .map(|m| {
                                            let name = m.name.clone();
                                            let selected = name == chosen;
                                            view! { <option value=name selected=selected>{model_label(&m)}</option> }
                                        })
                                        .collect_view()}
                                }
                                .into_any()
                            }}
                        </select>
                    </label>
                    <ContextPicker models=models model=model chosen=num_ctx server_default=default_num_ctx costs=costs/>
                </header> }.into_any()}
                {move || models_error.get().map(|e| view! { <div class="banner error" role="alert">{e}</div> })}
                {move || storage_error.get().map(|e| view! { <div class="banner error" role="alert" data-testid="storage-error">{e}</div> })}
                <div class="conversation" data-testid="conversation" on:scroll=on_scroll on:click=on_conversation_click
                    role="log" aria-live="polite" aria-label="Conversation">
                    <Show
                        when=move || !live.with(Vec::is_empty)
                        fallback=|| view! {
                            <div class="empty">
                                <p class="empty-title">"A private chat that stays on this machine."</p>
                                <p>"Pick a model, type a message, press Enter."</p>
                            </div>
                        }
                    >
                        {move || (window_from.get() > 0).then(|| view! {
                            <button type="button" class="show-earlier" data-testid="show-earlier"
                                on:click=move |_| show_earlier(window_from)>
                                {move || format!("Show earlier messages ({})", window_from.get())}
                            </button>
                        })}
                        <For each=visible key=|m| m.key let:msg>
                            <MessageView msg=msg/>
                        </For>
                    </Show>
                </div>
                <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
                    <textarea
                        data-testid="composer"
                        rows="2"
                        aria-label="Message"
                        placeholder="Message kinko… (Enter to send, Shift+Enter for a new line)"
                        prop:value=move || input.get()
                        on:input=move |ev| input.set(event_target_value(&ev))
                        on:keydown=on_keydown
                    ></textarea>
                    <Show
                        when=move || streaming.get().is_some()
                        fallback=move || view! {
                            <button type="submit" class="send" data-testid="send"
                                disabled=move || input.with(|t| t.trim().is_empty())>"Send"</button>
                        }
                    >
                        <button type="button" class="stop" data-testid="stop" on:click=move |_| page.stop_stream()>"Stop"</button>
                    </Show>
                </form>
            </main>
        </div>
    }
    .into_any()
}

/// Render `WINDOW` more of the earlier messages, keeping the view still.
fn show_earlier(window_from: RwSignal<usize>) {
    #[cfg(feature = "hydrate")]
    let anchor = crate::client::conversation_height();
    window_from.update(|f| *f = f.saturating_sub(WINDOW));
    #[cfg(feature = "hydrate")]
    crate::client::on_next_frame(move || crate::client::keep_scroll_after_growth(anchor));
}

#[cfg(feature = "hydrate")]
fn start_stream(
    page: Page,
    chat_id: String,
    messages: Vec<LiveMessage>,
    request: ChatRequest,
    answer: LiveMessage,
) {
    use crate::api::FinishReason;
    use crate::client::{StreamEvent, StreamFailure};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    let buffer = Rc::new(RefCell::new(String::new()));
    let scheduled = Rc::new(Cell::new(false));
    // Apply the text gathered since the last frame; save now and then.
    let messages = std::rc::Rc::new(messages);
    let flush = {
        let (buffer, answer, chat_id, messages) = (
            buffer.clone(),
            answer.clone(),
            chat_id.clone(),
            messages.clone(),
        );
        move |final_flush: bool| {
            let text = std::mem::take(&mut *buffer.borrow_mut());
            if !text.is_empty() {
                crate::client::bench_begin();
                let stick = crate::client::conversation_at_bottom();
                answer.content.update(|c| c.push_str(&text));
                if stick {
                    crate::client::on_next_frame(crate::client::scroll_conversation);
                }
            }
            if !final_flush && now() - page.last_save.get_value() >= SAVE_EVERY_MS {
                save_stream(page, &chat_id, &messages);
            }
        }
    };
    let notes = answer.notes.clone();
    let note = move |n: String| notes.update(|v| v.push(n));
    let on_event = {
        let (buffer, scheduled, flush, answer) = (
            buffer.clone(),
            scheduled.clone(),
            flush.clone(),
            answer.clone(),
        );
        move |event| match event {
            StreamEvent::Meta(meta) => {
                if meta.trimmed_messages > 0 && meta.trimmed_for_time {
                    note(format!(
                        "{} earlier message{} left out so the model reads this conversation within the time limit on this machine ({} prompt tokens). A smaller context size answers sooner; a bigger one remembers more.",
                        meta.trimmed_messages,
                        if meta.trimmed_messages == 1 { " was" } else { "s were" },
                        meta.prompt_tokens,
                    ));
                } else if meta.trimmed_messages > 0 {
                    note(format!(
                        "{} earlier message{} left out: the model saw only the latest part of this conversation ({} prompt tokens of its {}-token window).",
                        meta.trimmed_messages,
                        if meta.trimmed_messages == 1 { " was" } else { "s were" },
                        meta.prompt_tokens,
                        meta.context_window
                    ));
                }
            }
            StreamEvent::Delta(delta) => {
                buffer.borrow_mut().push_str(&delta.text);
                if !scheduled.replace(true) {
                    let (scheduled, flush) = (scheduled.clone(), flush.clone());
                    crate::client::on_next_frame(move || {
                        scheduled.set(false);
                        flush(false);
                    });
                }
            }
            StreamEvent::Done(done) => {
                flush(true);
                answer.pending.set(false);
                match done.finish_reason {
                    FinishReason::Length => note(format!(
                        "Stopped at the {}-token limit.",
                        done.usage.completion_tokens
                    )),
                    FinishReason::Timeout => note("Timed out.".into()),
                    FinishReason::Cancelled => note("Stopped.".into()),
                    FinishReason::Stop | FinishReason::Error => {}
                }
            }
            StreamEvent::Error(e) => {
                flush(true);
                answer.pending.set(false);
                answer.error.set(Some(e.message.clone()));
            }
        }
    };
    leptos::task::spawn_local(async move {
        let result = crate::client::stream_chat(&request, on_event).await;
        flush(true);
        answer.pending.set(false);
        match &result {
            Ok(()) => {}
            Err(StreamFailure::Aborted) => answer.notes.update(|v| v.push("Stopped.".into())),
            Err(StreamFailure::Http(status, msg)) => {
                answer.error.set(Some(format!("{msg} (HTTP {status})")))
            }
            Err(StreamFailure::Network(msg)) => answer
                .error
                .set(Some(format!("The connection broke: {msg}"))),
        }
        page.library.update_value(|l| {
            if let Some(c) = l.get_mut(&chat_id) {
                c.updated = now();
            }
        });
        // The answer is stored before Send comes back.
        if let Some(chat) = page.build(&chat_id, snapshot(&messages)) {
            page.remember(&chat);
            write(page.storage_error, chat).await;
        }
        page.streaming.set(None);
        // The answer taught the server more about its prompt speed.
        if let Ok(list) = crate::client::fetch_models().await {
            page.costs.set(list.prompt_costs);
        }
    });
}

/// Save the chat an answer streams into, with the answer so far (whether
/// or not the chat is still the one open).
#[cfg(feature = "hydrate")]
fn save_stream(page: Page, chat_id: &str, messages: &[LiveMessage]) {
    if let Some(chat) = page.build(chat_id, snapshot(messages)) {
        page.commit(chat);
    }
}

#[cfg(not(feature = "hydrate"))]
fn start_stream(_: Page, _: String, _: Vec<LiveMessage>, _: ChatRequest, _: LiveMessage) {
    // Event handlers only run in the browser.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str) -> ModelSummary {
        ModelSummary {
            name: name.into(),
            size: 0,
            quantization: "Q8_0".into(),
            context_length: 8192,
            architecture: "llama".into(),
        }
    }

    #[test]
    fn new_chats_start_on_the_servers_default_model() {
        let models = [summary("alpha:1b"), summary("smollm2:135m")];
        assert_eq!(starting_model(&models, "smollm2:135m"), "smollm2:135m");
        assert_eq!(starting_model(&models, "gone:7b"), "alpha:1b");
        assert_eq!(starting_model(&[], "smollm2:135m"), "");
    }
}
