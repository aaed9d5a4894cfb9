//! The list of conversations: search, new, switch, rename, pin, delete (with
//! undo). On a narrow screen it is a drawer.

use crate::chats::ChatSummary;
use crate::i18n::{tr, use_lang, Lang};
use crate::prefs::Theme;
use leptos::prelude::*;

/// What the sidebar asks the page to do.
#[derive(Clone, Copy)]
pub struct SidebarActions {
    /// Open this chat.
    pub open: Callback<String>,
    /// Start a new chat.
    pub new_chat: Callback<()>,
    /// Rename a chat: `(id, title)`; an empty title goes back to the
    /// first message's.
    pub rename: Callback<(String, String)>,
    /// Pin or unpin a chat.
    pub pin: Callback<String>,
    /// Delete a chat.
    pub delete: Callback<String>,
    /// Undo the last delete.
    pub undo: Callback<()>,
    /// Download every chat.
    pub export_all: Callback<()>,
    /// Import a file's text.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    pub import: Callback<String>,
}

fn icon(path: &'static str) -> impl IntoView {
    view! {
        <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">
            <path d=path fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"></path>
        </svg>
    }
}

const PIN: &str = "M12 17v5M9 3h6l-1 6 4 4H6l4-4z";
const PENCIL: &str = "M4 20h4L19 9l-4-4L4 16zM13.5 6.5l4 4";
const TRASH: &str = "M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3";

/// The sidebar.
#[component]
pub fn Sidebar(
    /// The chats to list, in order (already filtered by the search).
    chats: Signal<Vec<ChatSummary>>,
    /// The open chat.
    current: RwSignal<Option<String>>,
    /// The search box's text.
    query: RwSignal<String>,
    /// Whether the drawer is open (narrow screens).
    drawer: RwSignal<bool>,
    /// The title of the chat just deleted, while it can be undone.
    deleted: RwSignal<Option<String>>,
    /// What the buttons do.
    actions: SidebarActions,
    /// The colour theme.
    theme: RwSignal<Theme>,
) -> AnyView {
    let lang = use_lang();
    let editing = RwSignal::new(None::<String>);
    view! {
        <aside class="sidebar" class:open=move || drawer.get() aria-label=tr(lang, |t| t.conversations)>
            <div class="sidebar-head">
                <button type="button" class="new-chat" data-testid="new-chat"
                    on:click=move |_| actions.new_chat.run(()) title=tr(lang, |t| t.new_chat_title)>
                    {tr(lang, |t| t.new_chat)}
                </button>
            </div>
            <input type="search" class="chat-search" data-testid="chat-search"
                placeholder=tr(lang, |t| t.search_chats) aria-label=tr(lang, |t| t.search_chats)
                prop:value=move || query.get()
                on:input=move |ev| query.set(event_target_value(&ev))/>
            {move || deleted.get().map(|title| view! {
                <div class="undo" role="status">
                    <span>{move || (lang.get().t().deleted)(if title.is_empty() { lang.get().t().untitled } else { &title })}</span>
                    <button type="button" data-testid="chat-undo" on:click=move |_| actions.undo.run(())>{tr(lang, |t| t.undo)}</button>
                </div>
            })}
            <ul class="chat-list" data-testid="chat-list">
                <For
                    each=move || chats.get()
                    key=|c| (c.id.clone(), c.title.clone(), c.pinned)
                    let:chat
                >
                    {chat_item(chat, current, editing, actions)}
                </For>
            </ul>
            {move || (chats.with(Vec::is_empty)).then(|| view! {
                <p class="chat-list-empty">
                    {move || if query.with(String::is_empty) { lang.get().t().no_chats } else { lang.get().t().no_match }}
                </p>
            })}
            <div class="sidebar-foot">
                <div class="foot-row">
                    <button type="button" class="msg-button" data-testid="export-chats"
                        title=tr(lang, |t| t.export_chats_title)
                        on:click=move |_| actions.export_all.run(())>{tr(lang, |t| t.export_chats)}</button>
                    <label class="msg-button import-button" title=tr(lang, |t| t.import_title)>
                        {tr(lang, |t| t.import_chats)}
                        <input type="file" accept=".json,application/json" class="file-input" data-testid="import-chats"
                            on:change=move |ev| {
                                #[cfg(feature = "hydrate")]
                                {
                                    use wasm_bindgen::JsCast;
                                    if let Some(el) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) {
                                        if let Some(file) = el.files().and_then(|l| l.get(0)) {
                                            let import = actions.import;
                                            leptos::task::spawn_local(async move {
                                                let text = crate::client::file_text(&file).await;
                                                import.run(text.unwrap_or_default());
                                            });
                                        }
                                        el.set_value("");
                                    }
                                }
                                #[cfg(not(feature = "hydrate"))]
                                let _ = ev;
                            }/>
                    </label>
                </div>
                <div class="foot-row">
                    <label class="mini-picker">
                        <span class="visually-hidden">{tr(lang, |t| t.language)}</span>
                        <select data-testid="language"
                            prop:value=move || lang.get().code()
                            on:change=move |ev| {
                                if let Some(l) = Lang::from_tag(&event_target_value(&ev)) {
                                    lang.set(l);
                                    #[cfg(feature = "hydrate")]
                                    crate::client::remember_pref(crate::i18n::LANG_KEY, l.code());
                                }
                            }>
                            {Lang::ALL.into_iter().map(|l| view! {
                                <option value=l.code() selected=move || lang.get() == l>{l.t().name}</option>
                            }).collect_view()}
                        </select>
                    </label>
                    <label class="mini-picker">
                        <span class="visually-hidden">{tr(lang, |t| t.theme)}</span>
                        <select data-testid="theme"
                            prop:value=move || theme.get().code()
                            on:change=move |ev| {
                                if let Some(th) = Theme::from_code(&event_target_value(&ev)) {
                                    theme.set(th);
                                    #[cfg(feature = "hydrate")]
                                    crate::client::remember_pref(crate::prefs::THEME_KEY, th.code());
                                }
                            }>
                            {Theme::ALL.into_iter().map(|th| view! {
                                <option value=th.code() selected=move || theme.get() == th>{move || th.label(lang.get().t())}</option>
                            }).collect_view()}
                        </select>
                    </label>
                </div>
            </div>
        </aside>
        <div class="backdrop" class:open=move || drawer.get() on:click=move |_| drawer.set(false) aria-hidden="true"></div>
    }
    .into_any()
}

fn chat_item(
    chat: ChatSummary,
    current: RwSignal<Option<String>>,
    editing: RwSignal<Option<String>>,
    actions: SidebarActions,
) -> AnyView {
    let lang = use_lang();
    let ChatSummary {
        id, title, pinned, ..
    } = chat;
    let active = {
        let id = id.clone();
        move || current.with(|c| c.as_deref() == Some(id.as_str()))
    };
    let active_item = active.clone();
    let is_editing = {
        let id = id.clone();
        move || editing.with(|e| e.as_deref() == Some(id.as_str()))
    };
    let (open_id, pin_id, del_id, edit_id, save_id) =
        (id.clone(), id.clone(), id.clone(), id.clone(), id.clone());
    let save = move |value: String| {
        editing.set(None);
        actions.rename.run((save_id.clone(), value));
    };
    let edit_title = title.clone();
    view! {
        <li class="chat-item" class:pinned=pinned data-testid="chat-item"
            data-active=move || active_item().to_string()>
            <Show
                when=is_editing
                fallback=move || {
                    let open_id = open_id.clone();
                    let active = active.clone();
                    view! {
                        <button type="button" class="chat-open" title=title.clone()
                            aria-current=move || active().then_some("page")
                            on:click=move |_| actions.open.run(open_id.clone())>
                            <span class="chat-title">{
                                let title = title.clone();
                                move || if title.is_empty() { lang.get().t().untitled.to_string() } else { title.clone() }
                            }</span>
                        </button>
                    }
                }
            >
                {
                    let save = save.clone();
                    let save_blur = save.clone();
                    view! {
                        <input class="chat-title-input" aria-label=tr(lang, |t| t.chat_title) value=edit_title.clone()
                            autofocus=true
                            on:keydown=move |ev| {
                                if crate::attach::enter_sends(&ev.key(), false, ev.is_composing(), ev.key_code(), None) {
                                    ev.prevent_default();
                                    save(event_target_value(&ev));
                                } else if ev.key() == "Escape" {
                                    editing.set(None);
                                }
                            }
                            on:blur=move |ev| {
                                if editing.get_untracked().is_some() {
                                    save_blur(event_target_value(&ev));
                                }
                            }/>
                    }
                }
            </Show>
            <div class="chat-actions">
                <button type="button" data-testid="chat-pin" class="icon" class:on=pinned
                    aria-pressed=pinned.to_string()
                    aria-label=move || if pinned { lang.get().t().unpin } else { lang.get().t().pin }
                    title=move || if pinned { lang.get().t().unpin } else { lang.get().t().pin }
                    on:click=move |_| actions.pin.run(pin_id.clone())>{icon(PIN)}</button>
                <button type="button" data-testid="chat-rename" class="icon" aria-label=tr(lang, |t| t.rename) title=tr(lang, |t| t.rename)
                    on:click=move |_| editing.set(Some(edit_id.clone()))>{icon(PENCIL)}</button>
                <button type="button" data-testid="chat-delete" class="icon" aria-label=tr(lang, |t| t.delete) title=tr(lang, |t| t.delete)
                    on:click=move |_| actions.delete.run(del_id.clone())>{icon(TRASH)}</button>
            </div>
        </li>
    }
    .into_any()
}
