//! The list of conversations: search, new, switch, rename, pin, delete (with
//! undo). On a narrow screen it is a drawer.

use crate::chats::ChatSummary;
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
) -> AnyView {
    let editing = RwSignal::new(None::<String>);
    view! {
        <aside class="sidebar" class:open=move || drawer.get() aria-label="Conversations">
            <div class="sidebar-head">
                <button type="button" class="new-chat" data-testid="new-chat"
                    on:click=move |_| actions.new_chat.run(()) title="Start a new conversation">
                    "New chat"
                </button>
            </div>
            <input type="search" class="chat-search" data-testid="chat-search"
                placeholder="Search chats" aria-label="Search chats"
                prop:value=move || query.get()
                on:input=move |ev| query.set(event_target_value(&ev))/>
            {move || deleted.get().map(|title| view! {
                <div class="undo" role="status">
                    <span>{format!("Deleted “{title}”.")}</span>
                    <button type="button" data-testid="chat-undo" on:click=move |_| actions.undo.run(())>"Undo"</button>
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
                    {move || if query.with(String::is_empty) { "No saved chats yet." } else { "No chat matches." }}
                </p>
            })}
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
                            <span class="chat-title">{title.clone()}</span>
                        </button>
                    }
                }
            >
                {
                    let save = save.clone();
                    let save_blur = save.clone();
                    view! {
                        <input class="chat-title-input" aria-label="Chat title" value=edit_title.clone()
                            autofocus=true
                            on:keydown=move |ev| {
                                if ev.key() == "Enter" && !ev.is_composing() && ev.key_code() != 229 {
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
                    aria-label=if pinned { "Unpin" } else { "Pin to top" }
                    title=if pinned { "Unpin" } else { "Pin to top" }
                    on:click=move |_| actions.pin.run(pin_id.clone())>{icon(PIN)}</button>
                <button type="button" data-testid="chat-rename" class="icon" aria-label="Rename" title="Rename"
                    on:click=move |_| editing.set(Some(edit_id.clone()))>{icon(PENCIL)}</button>
                <button type="button" data-testid="chat-delete" class="icon" aria-label="Delete" title="Delete"
                    on:click=move |_| actions.delete.run(del_id.clone())>{icon(TRASH)}</button>
            </div>
        </li>
    }
    .into_any()
}
