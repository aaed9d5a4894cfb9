//! One message of the open conversation. Each message owns its signals, so
//! a streamed token touches only the message it belongs to; within an
//! answer, finished markdown blocks stay in the page as they are and only
//! the last, unfinished block is parsed and replaced.

use crate::api::Role;
use crate::chats::{split_think, UiMessage};
use crate::markdown::BlockSplitter;
use leptos::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A message of the open conversation, with a signal per part.
#[derive(Clone)]
pub struct LiveMessage {
    /// Unique in this page, the list's key.
    pub key: u64,
    /// Who wrote it (`None`: a notice from the page).
    pub role: Option<Role>,
    /// The text so far.
    pub content: ArcRwSignal<String>,
    /// Still streaming.
    pub pending: ArcRwSignal<bool>,
    /// An error shown under it.
    pub error: ArcRwSignal<Option<String>>,
    /// Notes shown under it.
    pub notes: ArcRwSignal<Vec<String>>,
}

impl LiveMessage {
    /// A live message from its stored form.
    pub fn from_saved(m: UiMessage) -> Self {
        Self {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            role: m.role,
            content: ArcRwSignal::new(m.content),
            pending: ArcRwSignal::new(m.pending),
            error: ArcRwSignal::new(m.error),
            notes: ArcRwSignal::new(m.notes),
        }
    }

    /// Its stored form now.
    pub fn snapshot(&self) -> UiMessage {
        UiMessage {
            role: self.role,
            content: self.content.get_untracked(),
            pending: self.pending.get_untracked(),
            error: self.error.get_untracked(),
            notes: self.notes.get_untracked(),
        }
    }
}

/// The words of a thinking section, for its summary line.
fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// One message.
#[component]
pub fn MessageView(msg: LiveMessage) -> impl IntoView {
    let LiveMessage {
        role,
        content,
        pending,
        error,
        notes,
        ..
    } = msg;
    let role_name = role.map(Role::as_str).unwrap_or("notice");
    let pending_class = pending.clone();
    let class = move || {
        format!(
            "msg {role_name}{}",
            if pending_class.get() { " pending" } else { "" }
        )
    };
    let footer = {
        let (notes, error) = (notes.clone(), error.clone());
        view! {
            {move || notes.get().into_iter().map(|n| view! { <div class="note" data-testid="note">{n}</div> }).collect_view()}
            {move || error.get().map(|e| view! { <div class="error" role="alert" data-testid="error">{e}</div> })}
        }
    };
    let copy = copy_button(content.clone(), role == Some(Role::Assistant));
    match role {
        Some(Role::Assistant) => view! {
            <div class=class data-testid="message" data-role="assistant">
                {assistant_body(content, pending)}
                {copy}
                {footer}
            </div>
        }
        .into_any(),
        Some(_) => view! {
            <div class=class data-testid="message" data-role=role_name>
                <div class="bubble plain">{move || content.get()}</div>
                {copy}
                {footer}
            </div>
        }
        .into_any(),
        None => view! { <div class=class data-role="notice">{footer}</div> }.into_any(),
    }
}

/// The Copy button of a message: an answer copies as markdown, without its
/// thinking section; a question as typed.
#[cfg_attr(not(feature = "hydrate"), allow(unused_variables))]
fn copy_button(content: ArcRwSignal<String>, answer: bool) -> impl IntoView {
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        content.with_untracked(|t| {
            crate::client::copy_text(if answer { split_think(t).2 } else { t })
        });
    };
    let label = if answer {
        "Copy the answer (markdown)"
    } else {
        "Copy the message"
    };
    view! {
        <div class="msg-actions">
            <button type="button" class="copy-message" data-testid="copy-message"
                aria-label=label title=label on:click=copy>
                "Copy"
            </button>
        </div>
    }
}

/// An answer's body: its thinking section, its finished blocks and its
/// unfinished last block.
fn assistant_body(content: ArcRwSignal<String>, pending: ArcRwSignal<bool>) -> AnyView {
    let blocks = RwSignal::new(Vec::<(usize, String)>::new());
    let tail_ref = NodeRef::<leptos::html::Div>::new();
    let splitter = StoredValue::new(BlockSplitter::default());
    let thinking = {
        let content = content.clone();
        Memo::new(move |_| {
            content.with(|t| {
                let (think, closed, _) = split_think(t);
                think.map(|th| (th.to_string(), closed))
            })
        })
    };
    let cursor_pending = pending.clone();
    Effect::new(move |_| {
        let last = !pending.get();
        let tail = tail_ref.get();
        let step = content.with(|text| {
            let answer = split_think(text).2;
            splitter
                .try_update_value(|s| s.advance(answer, last))
                .unwrap_or_default()
        });
        if step.reset || !step.finished.is_empty() {
            blocks.update(|b| {
                if step.reset {
                    b.clear();
                }
                let start = b.last().map(|(i, _)| i + 1).unwrap_or(0);
                b.extend(
                    step.finished
                        .into_iter()
                        .enumerate()
                        .map(|(i, h)| (start + i, h)),
                );
            });
        }
        if let Some(el) = tail {
            el.set_inner_html(&step.tail);
        }
        #[cfg(feature = "hydrate")]
        crate::client::bench_end();
    });
    view! {
        <div class="bubble markdown">
            {move || thinking.get().map(|(text, closed)| {
                let words = word_count(&text);
                view! {
                    <details class="thinking" data-testid="thinking">
                        <summary>
                            {if closed { "Thinking" } else { "Thinking…" }}
                            <span class="thinking-size">{format!(" · {words} word{}", if words == 1 { "" } else { "s" })}</span>
                        </summary>
                        <div class="thinking-body">{text}</div>
                    </details>
                }
            })}
            <For each=move || blocks.get() key=|(i, _)| *i let:block>
                <div class="md-block" inner_html=block.1></div>
            </For>
            <div class="md-block md-tail" node_ref=tail_ref></div>
            {move || cursor_pending.get().then(|| view! { <span class="cursor" aria-hidden="true"></span> })}
        </div>
    }
    .into_any()
}
