//! The chat page: the sidebar of conversations, the model picker, the open
//! conversation and the composer. Conversations live in the browser
//! (IndexedDB, one record each); the open one is sent whole each turn and
//! its answer streams in as SSE.

use crate::api::{ChatRequest, ModelPromptCost, ModelSummary, Role, SamplingDefaults};
use crate::attach::Composer;
use crate::chats::{
    sort_summaries, Attachment, Chat, ChatSettings, ChatSummary, UiMessage, CONTEXT_WARN_SHARE,
};
use crate::i18n::{tr, Lang, Text};
use crate::message::{LiveMessage, MessageActions, MessageView};
use crate::prefs::Theme;
use crate::settings::{SettingsPanel, SettingsProps};
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

/// What a model does beyond answering, as the picker shows it:
/// ` · tools · vision` (nothing for a plain chat model).
fn extra_capabilities(m: &ModelSummary) -> String {
    m.capabilities
        .iter()
        .filter(|c| **c != crate::api::Capability::Completion)
        .map(|c| format!(" · {}", c.as_str()))
        .collect()
}

/// Every capability of a model, space-separated (Ollama's names), for the
/// picker's `data-capabilities` and tooltip.
fn capability_list(m: &ModelSummary) -> String {
    m.capabilities
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn model_label(m: &ModelSummary, t: &Text) -> String {
    format!("{}{}", model_facts(m, t), extra_capabilities(m))
}

fn model_facts(m: &ModelSummary, t: &Text) -> String {
    if m.upstream.is_some() {
        // What its upstream's listing told, and that it runs elsewhere.
        let mut parts = vec![m.name.clone(), t.remote.to_string()];
        if !m.quantization.is_empty() {
            parts.push(m.quantization.clone());
        }
        if m.size > 0 {
            parts.push(human_size(m.size));
        }
        parts.push(format!("{}k ctx", m.context_length / 1024));
        return parts.join(" · ");
    }
    format!(
        "{} · {} · {} · {}k ctx",
        m.name,
        m.quantization,
        human_size(m.size),
        m.context_length / 1024
    )
}

/// The picker's groups: this machine's models, then each upstream's, in
/// the order listed (one group, unlabelled, when there is no upstream).
fn model_groups(models: Vec<ModelSummary>) -> Vec<(Option<String>, Vec<ModelSummary>)> {
    let mut groups: Vec<(Option<String>, Vec<ModelSummary>)> = Vec::new();
    let mut local = Vec::new();
    for m in models {
        match m.upstream.clone() {
            None => local.push(m),
            Some(u) => match groups
                .iter_mut()
                .find(|(g, _)| g.as_deref() == Some(u.as_str()))
            {
                Some((_, list)) => list.push(m),
                None => groups.push((Some(u), vec![m])),
            },
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    if !local.is_empty() || groups.is_empty() {
        groups.insert(0, (None, local));
    }
    groups
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
    settings: RwSignal<ChatSettings>,
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
    /// The message being edited.
    editing: RwSignal<Option<u32>>,
    /// What the polite status region says (a finished answer, once).
    announce: RwSignal<String>,
    /// A passing message (import result, refused file).
    notice: RwSignal<Option<String>>,
    lang: RwSignal<Lang>,
}

impl Page {
    fn refresh_summaries(&self) {
        let mut list: Vec<ChatSummary> = self
            .library
            .with_value(|l| l.values().map(Chat::summary).collect());
        sort_summaries(&mut list);
        self.summaries.set(list);
    }

    /// The stored form of chat `id` with the branch on screen as it is now.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn build(&self, id: &str, branch: Vec<UiMessage>) -> Option<Chat> {
        let mut chat = self.library.with_value(|l| l.get(id).cloned())?;
        chat.update_branch(&branch);
        Some(chat)
    }

    /// The open chat as stored.
    fn open_chat(&self) -> Option<Chat> {
        let id = self.current.get_untracked()?;
        self.library.with_value(|l| l.get(&id).cloned())
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
        leptos::task::spawn_local(write(self.storage_error, self.lang, chat));
    }

    /// Change the open chat's settings (model, context size, sampling)
    /// when they differ from what is stored.
    fn save_settings(&self) {
        let model = Some(self.model.get_untracked()).filter(|m| !m.is_empty());
        let num_ctx = self.num_ctx.get_untracked();
        let settings = self.settings.get_untracked();
        let Some(mut chat) = self.open_chat() else {
            return;
        };
        if chat.model == model && chat.num_ctx == num_ctx && chat.settings == settings {
            return;
        }
        chat.model = model;
        chat.num_ctx = num_ctx;
        chat.settings = settings;
        self.commit(chat);
    }

    fn stop_stream(&self) {
        #[cfg(feature = "hydrate")]
        crate::client::abort_current();
    }

    /// Put `chat`'s branch on screen and its settings in the panel (an
    /// empty new chat for `None`), rendering at least the last `keep`
    /// messages. With `reuse`, messages already on screen stay as they are
    /// (the same chat, another branch or a new answer).
    fn load(&self, chat: Option<&Chat>, keep: usize, reuse: bool) {
        let old: HashMap<u32, LiveMessage> = if reuse {
            self.live.with_untracked(|l| {
                l.iter()
                    .filter(|m| m.id > 0)
                    .map(|m| (m.id, m.clone()))
                    .collect()
            })
        } else {
            HashMap::new()
        };
        let messages: Vec<LiveMessage> = chat
            .map(|c| {
                c.branch()
                    .into_iter()
                    .map(|(i, version)| {
                        let m = &c.messages[i];
                        match old.get(&m.id) {
                            Some(live)
                                if live.version == version
                                    && live.content.with_untracked(|t| *t == m.content)
                                    && live.pending.get_untracked() == m.pending =>
                            {
                                live.clone()
                            }
                            _ => LiveMessage::from_saved(m.clone(), version),
                        }
                    })
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
        self.settings
            .set(chat.map(|c| c.settings.clone()).unwrap_or_default());
    }

    /// How many messages are rendered now.
    fn shown(&self) -> usize {
        self.live.with_untracked(Vec::len) - self.window_from.get_untracked()
    }

    fn show(&self, chat: Option<&Chat>) {
        self.stop_stream();
        self.editing.set(None);
        self.load(chat, WINDOW, false);
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
            let (storage_error, lang) = (self.storage_error, self.lang);
            leptos::task::spawn_local(async move {
                if let Some(db) = crate::store::db() {
                    match db.delete(&id).await {
                        Ok(()) => crate::store::post(&crate::store::Change::Delete { id }),
                        Err(e) => {
                            storage_error.set(Some((lang.get_untracked().t().storage_delete)(&e)))
                        }
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
                    self.load(Some(&chat), self.shown().max(WINDOW), true);
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

    /// Stream the answer that is `chat`'s current message (just added,
    /// pending) after the branch before it.
    fn begin(&self, mut chat: Chat, model: String) {
        let Some(answer_id) = chat.current else {
            return;
        };
        // An answer follows the message it answers (a first message that
        // is an answer, from a damaged import, has nothing to answer).
        let Some(upto) = chat
            .index_of(answer_id)
            .and_then(|i| chat.messages[i].parent)
        else {
            return;
        };
        chat.updated = now();
        let request = chat.request(model, upto);
        let id = chat.id.clone();
        self.commit(chat.clone());
        self.load(Some(&chat), self.shown() + 2, true);
        let Some(answer) = self.live.with_untracked(|l| l.last().cloned()) else {
            return;
        };
        self.streaming.set(Some(id.clone()));
        self.announce.set(String::new());
        scroll_to_bottom();
        start_stream(*self, id, self.live.get_untracked(), request, answer);
    }

    /// A new pending answer.
    fn pending_answer() -> UiMessage {
        UiMessage {
            role: Some(Role::Assistant),
            pending: true,
            created: now(),
            ..Default::default()
        }
    }

    /// Regenerate answer `id`: a new version beside it.
    fn regenerate(&self, id: u32) {
        if self.streaming.get_untracked().is_some() {
            return;
        }
        let Some(mut chat) = self.open_chat() else {
            return;
        };
        let Some(at) = chat.index_of(id) else {
            return;
        };
        // An answer left pending by a tab closed mid-stream ends here.
        chat.messages[at].pending = false;
        let parent = chat.messages[at].parent;
        chat.add(parent, Self::pending_answer());
        let model = self.model.get_untracked();
        self.begin(chat, model);
    }

    /// Send question `id` again as `text`: a new version beside it, with
    /// its files, and a new answer.
    fn resend(&self, id: u32, text: String) {
        if self.streaming.get_untracked().is_some() {
            return;
        }
        let Some(mut chat) = self.open_chat() else {
            return;
        };
        let Some(old) = chat.index_of(id).map(|i| chat.messages[i].clone()) else {
            return;
        };
        let question = chat.add(
            old.parent,
            UiMessage {
                role: old.role,
                content: text,
                attachments: old.attachments,
                created: now(),
                ..Default::default()
            },
        );
        chat.add(Some(question), Self::pending_answer());
        let model = self.model.get_untracked();
        self.begin(chat, model);
    }

    /// Show another version of message `id`.
    fn switch(&self, id: u32, step: isize) {
        if self.streaming.get_untracked().is_some() {
            return;
        }
        let Some(mut chat) = self.open_chat() else {
            return;
        };
        if chat.switch_version(id, step) {
            self.commit(chat.clone());
            self.load(Some(&chat), self.shown().max(WINDOW), true);
        }
    }

    /// Add imported chats (a bad file changes nothing).
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn import(&self, text: &str) {
        let lang = self.lang.get_untracked();
        match crate::export::import(text, now()) {
            Ok(chats) => {
                let (add, skipped) = self
                    .library
                    .with_value(|l| crate::export::merge_imported(l, chats, new_chat_id));
                let added = add.len();
                for chat in add {
                    self.commit(chat);
                }
                self.refresh_summaries();
                self.notice.set(Some((lang.t().imported)(
                    &lang.int(added),
                    &lang.int(skipped),
                )));
            }
            Err(e) => self
                .notice
                .set(Some((lang.t().import_failed)(&e.message(lang)))),
        }
    }
}

/// A new chat id (time plus randomness in the browser).
fn new_chat_id() -> String {
    #[cfg(feature = "hydrate")]
    return crate::client::new_id();
    #[cfg(not(feature = "hydrate"))]
    String::new()
}

/// Write one chat to IndexedDB and tell the other tabs; a failure is shown.
#[cfg(feature = "hydrate")]
async fn write(storage_error: RwSignal<Option<String>>, lang: RwSignal<Lang>, chat: Chat) {
    let Some(db) = crate::store::db() else {
        return;
    };
    match db.put(&chat).await {
        Ok(()) => {
            storage_error.set(None);
            crate::store::post(&crate::store::Change::Put { id: chat.id });
        }
        Err(e) => storage_error.set(Some((lang.get_untracked().t().storage_save)(&e))),
    }
}

/// The stored form of these messages now.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
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
    let lang = crate::i18n::use_lang();
    let theme = use_context::<RwSignal<Theme>>().unwrap_or_else(|| RwSignal::new(Theme::System));
    let page = Page {
        models: RwSignal::new(Vec::new()),
        default_model: RwSignal::new(String::new()),
        model: RwSignal::new(String::new()),
        num_ctx: RwSignal::new(None),
        settings: RwSignal::new(ChatSettings::default()),
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
        editing: RwSignal::new(None),
        announce: RwSignal::new(String::new()),
        notice: RwSignal::new(None),
        lang,
    };
    let models_error = RwSignal::new(None::<String>);
    let input = RwSignal::new(String::new());
    let files = RwSignal::new(Vec::<Attachment>::new());
    let default_num_ctx = RwSignal::new(0usize);
    let defaults = RwSignal::new(SamplingDefaults::default());
    let query = RwSignal::new(String::new());
    let drawer = RwSignal::new(false);
    let settings_open = RwSignal::new(false);
    let help_open = RwSignal::new(false);
    let Page {
        models,
        model,
        num_ctx,
        settings,
        costs,
        live,
        current,
        streaming,
        storage_error,
        window_from,
        editing,
        announce,
        notice,
        ..
    } = page;

    // Client only: open the store (migrating the old conversation), reopen
    // the chat this tab had open, fetch the models, mark hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            crate::client::bench_start();
            let t = lang.get_untracked().t();
            match crate::store::open().await {
                Ok(db) => {
                    if let Err(e) = db.migrate_legacy(now()).await {
                        storage_error.set(Some(e));
                    }
                    match db.all().await {
                        Ok(chats) => page.library.update_value(|l| {
                            l.extend(chats.into_iter().map(|c| (c.id.clone(), c)))
                        }),
                        Err(e) => storage_error.set(Some((t.storage_read)(&e))),
                    }
                    crate::store::set_db(db);
                }
                Err(e) => storage_error.set(Some((t.storage_unavailable)(&e))),
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
                    defaults.set(list.defaults);
                    costs.set(list.prompt_costs);
                    if list.models.is_empty() {
                        models_error.set(Some(lang.get_untracked().t().no_models.into()));
                    }
                    models.set(list.models);
                }
                Err(e) => models_error.set(Some((lang.get_untracked().t().models_error)(&e))),
            }
            let reopen = crate::client::open_chat_of_this_tab()
                .and_then(|id| page.library.with_value(|l| l.get(&id).cloned()));
            page.show(reopen.as_ref());
            crate::client::listen_for_shortcuts(move |key| {
                shortcut(page, key, help_open, settings_open, drawer)
            });
            crate::client::mark_hydrated();
        });
    });

    // The open chat remembers its model, context size and settings.
    Effect::new(move |first: Option<()>| {
        model.track();
        num_ctx.track();
        settings.track();
        if first.is_some() {
            page.save_settings();
        }
    });

    let send = move || {
        let text = input.get_untracked();
        let attached = files.get_untracked();
        if (text.trim().is_empty() && attached.is_empty()) || streaming.get_untracked().is_some() {
            return;
        }
        let model_name = model.get_untracked();
        if model_name.is_empty() {
            live.update(|m| {
                m.push(LiveMessage::from_saved(
                    UiMessage {
                        role: None,
                        error: Some(lang.get_untracked().t().pick_model_first.into()),
                        ..Default::default()
                    },
                    (1, 1),
                ))
            });
            return;
        }
        input.set(String::new());
        files.set(Vec::new());
        notice.set(None);
        let mut chat = page.open_chat().unwrap_or_else(|| {
            let mut chat = Chat::new(new_chat_id(), Some(model_name.clone()), now());
            chat.num_ctx = num_ctx.get_untracked();
            chat.settings = settings.get_untracked();
            current.set(Some(chat.id.clone()));
            #[cfg(feature = "hydrate")]
            crate::client::remember_open_chat(Some(&chat.id));
            chat
        });
        let parent = live.with_untracked(|l| l.iter().rev().find(|m| m.id > 0).map(|m| m.id));
        // An answer left pending by a tab closed mid-stream ends here.
        if let Some(i) = parent.and_then(|p| chat.index_of(p)) {
            chat.messages[i].pending = false;
        }
        let question = chat.add(
            parent,
            UiMessage {
                role: Some(Role::User),
                content: text,
                attachments: attached,
                created: now(),
                ..Default::default()
            },
        );
        chat.add(Some(question), Page::pending_answer());
        page.begin(chat, model_name);
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
            files.set(Vec::new());
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
        export_all: Callback::new(move |_| {
            let mut chats: Vec<Chat> = page.library.with_value(|l| l.values().cloned().collect());
            chats.sort_by(|a, b| a.created.total_cmp(&b.created));
            let _json = crate::export::export_json(chats, now());
            #[cfg(feature = "hydrate")]
            crate::client::download(
                &crate::client::dated_name("kinko-chats", "json"),
                "application/json",
                &_json,
            );
        }),
        import: Callback::new(move |text: String| page.import(&text)),
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

    let on_scroll = move |_| {
        #[cfg(feature = "hydrate")]
        if window_from.get_untracked() > 0 && crate::client::conversation_near_top() {
            show_earlier(window_from);
        }
    };

    let on_conversation_click = move |_ev: leptos::ev::MouseEvent| {
        #[cfg(feature = "hydrate")]
        crate::client::copy_code_clicked(&_ev, lang.get_untracked().t());
    };

    let visible = move || {
        live.with(|m| {
            let from = window_from.get().min(m.len());
            m[from..].to_vec()
        })
    };
    let last_answer = Signal::derive(move || {
        live.with(|m| {
            m.iter()
                .rev()
                .find(|m| m.id > 0)
                .filter(|m| m.role == Some(Role::Assistant))
                .map_or(0, |m| m.id)
        })
    });
    let message_actions = MessageActions {
        regenerate: Callback::new(move |id| page.regenerate(id)),
        resend: Callback::new(move |(id, text)| page.resend(id, text)),
        switch: Callback::new(move |(id, step)| page.switch(id, step)),
        editing,
        busy: Signal::derive(move || streaming.get().is_some()),
        last_answer,
    };
    let edit_last = Callback::new(move |_| {
        if streaming.get_untracked().is_some() {
            return;
        }
        let last_question = live.with_untracked(|m| {
            m.iter()
                .rev()
                .find(|m| m.role == Some(Role::User) && m.id > 0)
                .map(|m| m.id)
        });
        if let Some(id) = last_question {
            editing.set(Some(id));
        }
    });
    let chat_title = Signal::derive(move || {
        current
            .with(|c| {
                c.as_ref().and_then(|id| {
                    page.library
                        .with_value(|l| l.get(id).map(Chat::display_title))
                })
            })
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| lang.get().t().untitled.to_string())
    });
    let chat_created = Signal::derive(move || {
        current
            .with(|c| {
                c.as_ref()
                    .and_then(|id| page.library.with_value(|l| l.get(id).map(|c| c.created)))
            })
            .unwrap_or(0.0)
    });
    let export_chat = move |markdown: bool| {
        let Some(chat) = page.open_chat() else {
            return;
        };
        let (name, mime, text) = if markdown {
            (
                crate::export::file_name(&chat.display_title(), "md"),
                "text/markdown",
                crate::export::export_markdown(&chat, lang.get_untracked()),
            )
        } else {
            (
                crate::export::file_name(&chat.display_title(), "json"),
                "application/json",
                crate::export::export_json(vec![chat], now()),
            )
        };
        #[cfg(feature = "hydrate")]
        crate::client::download(&name, mime, &text);
        #[cfg(not(feature = "hydrate"))]
        let _ = (name, mime, text);
    };

    view! {
        <div class="app">
            <Sidebar chats=shown_chats current=current query=query drawer=drawer deleted=deleted_title actions=actions theme=theme/>
            <main class="main">
                {view! { <header class="topbar">
                    <button type="button" class="icon menu" data-testid="sidebar-toggle"
                        aria-label=tr(lang, |t| t.chats)
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
                        <span class="visually-hidden">{tr(lang, |t| t.model)}</span>
                        <select
                            data-testid="model-picker"
                            on:change=move |ev| model.set(event_target_value(&ev))
                            prop:value=move || model.get()
                        >
                            {move || {
                                let list = models.get();
                                let chosen = model.get();
                                let t = lang.get().t();
                                if list.is_empty() {
                                    return view! { <option value="">{t.loading_models}</option> }.into_any();
                                }
                                let missing = (!chosen.is_empty() && !list.iter().any(|m| m.name == chosen))
                                    .then(|| view! { <option value=chosen.clone()>{(t.not_installed)(&chosen)}</option> });
                                let option = |m: ModelSummary| {
                                    let name = m.name.clone();
                                    let selected = name == chosen;
                                    let caps = capability_list(&m);
                                    view! {
                                        <option value=name selected=selected data-capabilities=caps.clone()
                                            title=format!("{}: {caps}", t.capabilities)>{model_label(&m, t)}</option>
                                    }
                                };
                                let groups = model_groups(list);
                                let grouped = groups.len() > 1;
                                view! {
                                    {missing}
                                    {groups.into_iter()
                                        .map(|(upstream, models)| {
                                            let options = models.into_iter().map(option).collect_view();
                                            match (grouped, upstream) {
                                                (false, _) => options.into_any(),
                                                (true, None) => view! {
                                                    <optgroup label=t.local_models>{options}</optgroup>
                                                }.into_any(),
                                                (true, Some(u)) => view! {
                                                    <optgroup label=(t.remote_models)(&u) data-upstream=u.clone()>{options}</optgroup>
                                                }.into_any(),
                                            }
                                        })
                                        .collect_view()}
                                }
                                .into_any()
                            }}
                        </select>
                    </label>
                    <button type="button" class="icon" data-testid="chat-settings"
                        aria-label=tr(lang, |t| t.settings) title=tr(lang, |t| t.settings)
                        aria-expanded=move || settings_open.get().to_string()
                        on:click=move |_| settings_open.update(|o| *o = !*o)>
                        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
                            <path d="M4 7h10M18 7h2M4 17h4M12 17h8M14 4v6M8 14v6" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"></path>
                        </svg>
                    </button>
                    <button type="button" class="icon" data-testid="export-chat"
                        aria-label=tr(lang, |t| t.export_chat) title=tr(lang, |t| t.export_chat)
                        disabled=move || current.get().is_none()
                        on:click=move |_| export_chat(false)>
                        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
                            <path d="M12 4v11M7 10l5 5 5-5M5 19h14" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"></path>
                        </svg>
                    </button>
                    <button type="button" class="icon help-button" data-testid="help"
                        aria-label=tr(lang, |t| t.help) title=tr(lang, |t| t.help)
                        on:click=move |_| help_open.set(true)>"?"</button>
                </header> }.into_any()}
                {move || models_error.get().map(|e| view! { <div class="banner error" role="alert">{e}</div> })}
                {move || storage_error.get().map(|e| view! { <div class="banner error" role="alert" data-testid="storage-error">{e}</div> })}
                {move || notice.get().map(|n| view! {
                    <div class="banner info" role="status" data-testid="notice">
                        <span>{n}</span>
                        <button type="button" class="icon" aria-label=tr(lang, |t| t.close) on:click=move |_| notice.set(None)>"✕"</button>
                    </div>
                })}
                <div class="conversation" data-testid="conversation" on:scroll=on_scroll on:click=on_conversation_click
                    role="region" tabindex="0" aria-label=tr(lang, |t| t.conversation)>
                    <Show
                        when=move || !live.with(Vec::is_empty)
                        fallback=move || {
                            // Said plainly when the model runs elsewhere.
                            let upstream = move || {
                                let chosen = model.get();
                                models.with(|list| {
                                    list.iter().find(|m| m.name == chosen).and_then(|m| m.upstream.clone())
                                })
                            };
                            view! {
                                <div class="empty" data-testid="empty">
                                    <p class="empty-title">{move || match upstream() {
                                        Some(_) => lang.get().t().remote_title.to_string(),
                                        None => lang.get().t().empty_title.to_string(),
                                    }}</p>
                                    <p>{move || match upstream() {
                                        Some(u) => (lang.get().t().remote_hint)(&u),
                                        None => lang.get().t().empty_hint.to_string(),
                                    }}</p>
                                </div>
                            }
                        }
                    >
                        {move || (window_from.get() > 0).then(|| view! {
                            <button type="button" class="show-earlier" data-testid="show-earlier"
                                on:click=move |_| show_earlier(window_from)>
                                {move || (lang.get().t().show_earlier)(&lang.get().int(window_from.get()))}
                            </button>
                        })}
                        <For each=visible key=|m| m.key let:msg>
                            <MessageView msg=msg actions=message_actions/>
                        </For>
                    </Show>
                </div>
                <div class="visually-hidden" role="status" data-testid="announcer">{move || announce.get()}</div>
                <Composer parts=crate::attach::ComposerParts {
                    input,
                    files,
                    streaming: Signal::derive(move || streaming.get().is_some()),
                    send: Callback::new(move |_| send()),
                    stop: Callback::new(move |_| page.stop_stream()),
                    edit_last,
                    notice,
                }/>
                <ContextGauge live=live/>
            </main>
            <SettingsPanel props=SettingsProps {
                settings,
                num_ctx,
                models,
                model,
                default_num_ctx,
                defaults,
                costs,
                open: settings_open,
                title: chat_title,
                created: chat_created,
            }>
                <div class="settings-export">
                    <button type="button" class="msg-button" data-testid="export-chat-json"
                        disabled=move || current.get().is_none()
                        on:click=move |_| export_chat(false)>{tr(lang, |t| t.export_json)}</button>
                    <button type="button" class="msg-button" data-testid="export-chat-md"
                        disabled=move || current.get().is_none()
                        on:click=move |_| export_chat(true)>{tr(lang, |t| t.export_markdown)}</button>
                </div>
            </SettingsPanel>
            <HelpDialog open=help_open/>
        </div>
    }
    .into_any()
}

/// A keyboard shortcut of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// Ctrl+Shift+O: a new chat.
    NewChat,
    /// Ctrl+K: search the chats.
    Search,
    /// Ctrl+/: the list of shortcuts.
    Help,
    /// Esc: stop the answer, or close what is open.
    Escape,
}

/// What a keyboard shortcut does.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn shortcut(
    page: Page,
    key: Shortcut,
    help_open: RwSignal<bool>,
    settings_open: RwSignal<bool>,
    drawer: RwSignal<bool>,
) -> bool {
    match key {
        Shortcut::NewChat => {
            drawer.set(false);
            page.show(None);
            focus("[data-testid=composer]");
            true
        }
        Shortcut::Search => {
            drawer.set(true);
            focus("[data-testid=chat-search]");
            true
        }
        Shortcut::Help => {
            help_open.update(|o| *o = !*o);
            true
        }
        Shortcut::Escape => {
            if help_open.get_untracked() {
                help_open.set(false);
            } else if page.editing.get_untracked().is_some() {
                page.editing.set(None);
            } else if page.streaming.get_untracked().is_some() {
                page.stop_stream();
            } else if settings_open.get_untracked() {
                settings_open.set(false);
            } else if drawer.get_untracked() {
                drawer.set(false);
            } else {
                return false;
            }
            true
        }
    }
}

fn focus(_selector: &str) {
    #[cfg(feature = "hydrate")]
    crate::client::focus(_selector);
}

/// The prompt's share of the model's window, from the last answer's
/// `meta`, with a warning before earlier messages start being left out.
#[component]
fn ContextGauge(live: RwSignal<Vec<LiveMessage>>) -> impl IntoView {
    let lang = crate::i18n::use_lang();
    let last = Memo::new(move |_| {
        live.with(|m| {
            m.iter()
                .rev()
                .filter(|m| m.role == Some(Role::Assistant))
                .find_map(|m| m.stats.get().filter(|s| s.context_window > 0))
        })
    });
    let pct = move || {
        last.get()
            .and_then(|s| s.context_share())
            .map_or(0, |s| (s * 100.0).round() as u32)
    };
    let state = move || match last.get() {
        Some(s) if s.trimmed_messages > 0 => "trimmed",
        Some(s) if s.context_share().unwrap_or(0.0) >= CONTEXT_WARN_SHARE => "warn",
        _ => "ok",
    };
    view! {
        <div class="context-gauge" data-testid="context-gauge" data-state=state>
            <meter class="gauge-bar" min="0" max="100" low="50" high="75" optimum="0"
                value=move || pct().to_string()
                aria-label=tr(lang, |t| t.gauge_label)></meter>
            <span class="gauge-text">
                {move || {
                    let l = lang.get();
                    let t = l.t();
                    match last.get() {
                        None => t.gauge_empty.to_string(),
                        Some(s) => {
                            let used = (t.gauge)(
                                &l.int(s.prompt_tokens + s.completion_tokens),
                                &l.int(s.context_window),
                                &pct().to_string(),
                            );
                            match state() {
                                "trimmed" => format!("{used} · {}", t.gauge_trimmed),
                                "warn" => format!("{used} · {}", t.gauge_warn),
                                _ => used,
                            }
                        }
                    }
                }}
            </span>
        </div>
    }
}

/// The keyboard shortcuts, listed.
#[component]
fn HelpDialog(open: RwSignal<bool>) -> impl IntoView {
    let lang = crate::i18n::use_lang();
    let rows = move || {
        let t = lang.get().t();
        [
            ("Ctrl+Shift+O", t.key_new_chat),
            ("Ctrl+K", t.key_search),
            ("Esc", t.key_stop),
            ("↑", t.key_edit_last),
            ("Enter", t.key_send),
            ("Shift+Enter", t.key_newline),
            ("Ctrl+/", t.key_help),
        ]
    };
    let close_ref = NodeRef::<leptos::html::Button>::new();
    // Focus moves into the dialog when it opens.
    Effect::new(move |_| {
        if let Some(button) = close_ref.get() {
            let _ = button.focus();
        }
    });
    view! {
        <Show when=move || open.get()>
            <div class="dialog-backdrop" on:click=move |_| open.set(false)></div>
            <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="help-title" data-testid="help-dialog">
                <h2 id="help-title">{tr(lang, |t| t.shortcuts)}</h2>
                <table class="keys">
                    <tbody>
                        {move || rows().into_iter().map(|(k, what)| view! {
                            <tr><td><kbd>{k}</kbd></td><td>{what}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
                <button type="button" class="send" data-testid="help-close" node_ref=close_ref
                    on:click=move |_| open.set(false)>{tr(lang, |t| t.close)}</button>
            </div>
        </Show>
    }
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
    use crate::chats::AnswerStats;
    use crate::client::{StreamEvent, StreamFailure};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    let buffer = Rc::new(RefCell::new(String::new()));
    let scheduled = Rc::new(Cell::new(false));
    // Apply the text gathered since the last frame; save now and then.
    let messages = std::rc::Rc::new(messages);
    let finished = Rc::new(Cell::new(false));
    let flush = {
        let (buffer, answer, chat_id, messages, finished) = (
            buffer.clone(),
            answer.clone(),
            chat_id.clone(),
            messages.clone(),
            finished.clone(),
        );
        move |final_flush: bool| {
            // After the final save, a frame still queued (a hidden tab runs
            // them late) neither applies nor saves anything.
            if finished.get() {
                return;
            }
            finished.set(final_flush);
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
    let stats = answer.stats.clone();
    let on_event = {
        let (buffer, scheduled, flush, answer) = (
            buffer.clone(),
            scheduled.clone(),
            flush.clone(),
            answer.clone(),
        );
        move |event| match event {
            StreamEvent::Meta(meta) => stats.set(Some(AnswerStats {
                prompt_tokens: meta.prompt_tokens,
                context_window: meta.context_window,
                trimmed_messages: meta.trimmed_messages,
                trimmed_for_time: meta.trimmed_for_time,
                ..AnswerStats::default()
            })),
            StreamEvent::Delta(delta) => {
                buffer.borrow_mut().push_str(&delta.text);
                // Frames do not run in a hidden tab: the text is applied
                // and saved from here when a save is due.
                if now() - page.last_save.get_value() >= SAVE_EVERY_MS {
                    flush(false);
                } else if !scheduled.replace(true) {
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
                stats.update(|s| {
                    let s = s.get_or_insert_with(AnswerStats::default);
                    s.ttft_ms = Some(done.timings.ttft_ms);
                    s.tokens_per_second = Some(done.timings.tokens_per_second);
                    s.completion_tokens = done.usage.completion_tokens;
                    s.prompt_tokens = done.usage.prompt_tokens.max(s.prompt_tokens);
                    s.finish = Some(done.finish_reason);
                });
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
        let t = page.lang.get_untracked().t();
        match &result {
            Ok(()) => {}
            Err(StreamFailure::Aborted) => answer.stats.update(|s| {
                let s = s.get_or_insert_with(AnswerStats::default);
                s.finish.get_or_insert(FinishReason::Cancelled);
            }),
            Err(StreamFailure::Http(status, msg)) => answer
                .error
                .set(Some((t.http_error)(msg, &status.to_string()))),
            Err(StreamFailure::Network(msg)) => answer.error.set(Some((t.connection_broke)(msg))),
        }
        page.library.update_value(|l| {
            if let Some(c) = l.get_mut(&chat_id) {
                c.updated = now();
            }
        });
        // The answer is stored before Send comes back.
        if let Some(chat) = page.build(&chat_id, snapshot(&messages)) {
            page.remember(&chat);
            write(page.storage_error, page.lang, chat).await;
        }
        // Announced once, politely: the whole answer, not each token.
        let text = answer
            .content
            .with_untracked(|c| crate::chats::split_think(c).2.to_string());
        page.announce.set(match answer.error.get_untracked() {
            Some(e) => e,
            None => text,
        });
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
            preset: Default::default(),
            upstream: None,
            capabilities: Vec::new(),
        }
    }

    #[test]
    fn remote_models_are_grouped_by_upstream_after_the_local_ones() {
        let remote = |name: &str, u: &str| ModelSummary {
            upstream: Some(u.into()),
            capabilities: Vec::new(),
            quantization: String::new(),
            ..summary(name)
        };
        let groups = model_groups(vec![
            remote("lab/m:1", "lab"),
            summary("alpha:1b"),
            remote("gpu/x", "gpu"),
            remote("lab/m:2", "lab"),
        ]);
        let shape: Vec<(Option<&str>, Vec<&str>)> = groups
            .iter()
            .map(|(u, ms)| (u.as_deref(), ms.iter().map(|m| m.name.as_str()).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (None, vec!["alpha:1b"]),
                (Some("gpu"), vec!["gpu/x"]),
                (Some("lab"), vec!["lab/m:1", "lab/m:2"]),
            ]
        );
        assert_eq!(model_groups(vec![summary("a:1")]).len(), 1);
        let t = crate::i18n::Lang::En.t();
        assert_eq!(
            model_label(&remote("lab/m:1", "lab"), t),
            "lab/m:1 · remote · 8k ctx"
        );
        assert_eq!(
            model_label(&summary("alpha:1b"), t),
            "alpha:1b · Q8_0 · — · 8k ctx"
        );
        let able = ModelSummary {
            capabilities: vec![
                crate::api::Capability::Completion,
                crate::api::Capability::Tools,
                crate::api::Capability::Vision,
            ],
            ..summary("able:1b")
        };
        assert_eq!(
            model_label(&able, t),
            "able:1b · Q8_0 · — · 8k ctx · tools · vision"
        );
        assert_eq!(capability_list(&able), "completion tools vision");
    }

    #[test]
    fn new_chats_start_on_the_servers_default_model() {
        let models = [summary("alpha:1b"), summary("smollm2:135m")];
        assert_eq!(starting_model(&models, "smollm2:135m"), "smollm2:135m");
        assert_eq!(starting_model(&models, "gone:7b"), "alpha:1b");
        assert_eq!(starting_model(&[], "smollm2:135m"), "");
    }
}
