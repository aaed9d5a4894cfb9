//! One message of the open conversation. Each message owns its signals, so
//! a streamed token touches only the message it belongs to; within an
//! answer, finished markdown blocks stay in the page as they are and only
//! the last, unfinished block is parsed and replaced.

use crate::api::{FinishReason, Role};
use crate::chats::{split_think, AnswerStats, Attachment, UiMessage};
use crate::i18n::{tr, use_lang, Lang};
use crate::markdown::BlockSplitter;
use leptos::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A message of the open conversation, with a signal per part.
#[derive(Clone)]
pub struct LiveMessage {
    /// Unique in this page, the list's key.
    pub key: u64,
    /// Its id in its chat (0: a notice of the page).
    pub id: u32,
    /// The message it follows.
    pub parent: Option<u32>,
    /// Which version it is among its siblings, and of how many.
    pub version: (usize, usize),
    /// Who wrote it (`None`: a notice from the page).
    pub role: Option<Role>,
    /// Files sent with it.
    pub attachments: Vec<Attachment>,
    /// When it was written.
    pub created: f64,
    /// The text so far.
    pub content: ArcRwSignal<String>,
    /// Still streaming.
    pub pending: ArcRwSignal<bool>,
    /// An error shown under it.
    pub error: ArcRwSignal<Option<String>>,
    /// Notes shown under it (earlier versions' English notes).
    pub notes: ArcRwSignal<Vec<String>>,
    /// How the answer went.
    pub stats: ArcRwSignal<Option<AnswerStats>>,
}

impl LiveMessage {
    /// A live message from its stored form.
    pub fn from_saved(m: UiMessage, version: (usize, usize)) -> Self {
        Self {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            id: m.id,
            parent: m.parent,
            version,
            role: m.role,
            attachments: m.attachments,
            created: m.created,
            content: ArcRwSignal::new(m.content),
            pending: ArcRwSignal::new(m.pending),
            error: ArcRwSignal::new(m.error),
            notes: ArcRwSignal::new(m.notes),
            stats: ArcRwSignal::new(m.stats),
        }
    }

    /// Its stored form now.
    pub fn snapshot(&self) -> UiMessage {
        UiMessage {
            id: self.id,
            parent: self.parent,
            role: self.role,
            content: self.content.get_untracked(),
            attachments: self.attachments.clone(),
            pending: self.pending.get_untracked(),
            error: self.error.get_untracked(),
            notes: self.notes.get_untracked(),
            stats: self.stats.get_untracked(),
            created: self.created,
        }
    }
}

/// What the message buttons ask the page to do, and what they need to
/// know of it.
#[derive(Clone, Copy)]
pub struct MessageActions {
    /// Write a new answer in place of answer `id` (a new version).
    pub regenerate: Callback<u32>,
    /// Send question `id` again with this text (a new version).
    pub resend: Callback<(u32, String)>,
    /// Show the version `step` away from message `id`.
    pub switch: Callback<(u32, isize)>,
    /// The message being edited.
    pub editing: RwSignal<Option<u32>>,
    /// An answer is streaming (branches cannot change meanwhile).
    pub busy: Signal<bool>,
    /// The id of the last answer on screen (the one Regenerate is for).
    pub last_answer: Signal<u32>,
}

/// The words of a thinking section, for its summary line.
fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The notes an answer's stats call for: trimmed history, and why it ended
/// when that was not its own choice.
pub fn stats_notes(stats: &AnswerStats, lang: Lang) -> Vec<String> {
    let t = lang.t();
    let mut notes = Vec::new();
    if stats.trimmed_messages > 0 {
        let n = lang.int(stats.trimmed_messages);
        notes.push(if stats.trimmed_for_time {
            (t.trimmed_for_time)(&n, &lang.int(stats.prompt_tokens))
        } else {
            (t.trimmed)(
                &n,
                &lang.int(stats.prompt_tokens),
                &lang.int(stats.context_window),
            )
        });
    }
    match stats.finish {
        Some(FinishReason::Length) => {
            notes.push((t.length_limit)(&lang.int(stats.completion_tokens)))
        }
        Some(FinishReason::Timeout) => notes.push(t.timed_out.into()),
        Some(FinishReason::Cancelled) => notes.push(t.stopped.into()),
        _ => {}
    }
    notes
}

/// The stats line under an answer: `0.42 s to first token · 31.5 tokens/s
/// · 128 tokens · ended: finished`.
pub fn stats_line(stats: &AnswerStats, lang: Lang) -> String {
    let t = lang.t();
    let mut parts = Vec::new();
    if let Some(ms) = stats.ttft_ms {
        parts.push((t.ttft)(&lang.dec(ms / 1000.0, 2)));
    }
    if let Some(rate) = stats.tokens_per_second.filter(|r| *r > 0.0) {
        parts.push((t.tokens_per_second)(&lang.dec(rate, 1)));
    }
    parts.push((t.tokens)(&lang.int(stats.completion_tokens)));
    if let Some(reason) = stats.finish {
        parts.push((t.ended)(lang.finish(reason)));
    }
    parts.join(" · ")
}

/// One message.
#[component]
pub fn MessageView(msg: LiveMessage, actions: MessageActions) -> impl IntoView {
    let lang = use_lang();
    let LiveMessage {
        id,
        role,
        content,
        pending,
        error,
        notes,
        stats,
        version,
        attachments,
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
        let (notes, error, stats) = (notes.clone(), error.clone(), stats.clone());
        view! {
            {move || notes.get().into_iter().map(|n| view! { <div class="note" data-testid="note">{n}</div> }).collect_view()}
            {move || stats.get().map(|s| stats_notes(&s, lang.get()).into_iter().map(|n| view! { <div class="note" data-testid="note">{n}</div> }).collect_view())}
            {move || error.get().map(|e| view! { <div class="error" role="alert" data-testid="error">{e}</div> })}
        }
    };
    let answer = role == Some(Role::Assistant);
    let busy = actions.busy;
    let copy = copy_button(content.clone(), answer);
    let nav = (version.1 > 1).then(|| branch_nav(id, version, actions));
    match role {
        Some(Role::Assistant) => {
            // Also for an answer left pending by a tab closed mid-stream
            // (disabled while this tab streams).
            let can_regenerate = move || actions.last_answer.get() == id;
            let stats_view = {
                let stats = stats.clone();
                move || {
                    stats.get().map(|s| {
                        view! {
                            <div class="answer-stats" data-testid="answer-stats" aria-label=tr(lang, |t| t.stats_label)>
                                {move || stats_line(&s, lang.get())}
                            </div>
                        }
                    })
                }
            };
            view! {
                <div class=class data-testid="message" data-role="assistant" data-id=id>
                    {assistant_body(content, pending)}
                    <div class="msg-actions">
                        {nav}
                        {copy}
                        {move || can_regenerate().then(|| view! {
                            <button type="button" class="msg-button" data-testid="regenerate"
                                disabled=move || busy.get()
                                title=tr(lang, |t| t.regenerate_title)
                                on:click=move |_| actions.regenerate.run(id)>
                                {tr(lang, |t| t.regenerate)}
                            </button>
                        })}
                    </div>
                    {stats_view}
                    {footer}
                </div>
            }
            .into_any()
        }
        Some(_) => {
            let editing = move || actions.editing.get() == Some(id);
            let files = (!attachments.is_empty()).then(|| {
                view! {
                    <ul class="attachments sent" aria-label=tr(lang, |t| t.attach)>
                        {attachments.iter().map(|a| view! {
                            <li class="attachment" title=a.name.clone()>{a.name.clone()}</li>
                        }).collect_view()}
                    </ul>
                }
            });
            let edit_content = content.clone();
            let show_content = content.clone();
            view! {
                <div class=class data-testid="message" data-role=role_name data-id=id>
                    <Show when=editing fallback=move || {
                        let c = show_content.clone();
                        view! { <div class="bubble plain">{move || c.get()}</div> }
                    }>
                        {edit_box(id, edit_content.get_untracked(), actions)}
                    </Show>
                    {files}
                    <div class="msg-actions">
                        {nav}
                        {copy}
                        {(role == Some(Role::User)).then(|| view! {
                            <button type="button" class="msg-button" data-testid="edit"
                                disabled=move || busy.get()
                                title=tr(lang, |t| t.edit_title)
                                on:click=move |_| actions.editing.set(Some(id))>
                                {tr(lang, |t| t.edit)}
                            </button>
                        })}
                    </div>
                    {footer}
                </div>
            }
            .into_any()
        }
        None => view! { <div class=class data-role="notice">{footer}</div> }.into_any(),
    }
}

/// `‹ 2/3 ›`: move between the versions of a message.
fn branch_nav(id: u32, (at, of): (usize, usize), actions: MessageActions) -> impl IntoView {
    let lang = use_lang();
    let busy = actions.busy;
    view! {
        <span class="branch-nav" role="group" aria-label=move || (lang.get().t().version_of)(&at.to_string(), &of.to_string())>
            <button type="button" class="msg-button icon-button" data-testid="branch-prev"
                aria-label=tr(lang, |t| t.branch_prev) title=tr(lang, |t| t.branch_prev)
                disabled=move || { busy.get() || at <= 1 }
                on:click=move |_| actions.switch.run((id, -1))>"‹"</button>
            <span class="branch-label" data-testid="branch-label">{format!("{at}/{of}")}</span>
            <button type="button" class="msg-button icon-button" data-testid="branch-next"
                aria-label=tr(lang, |t| t.branch_next) title=tr(lang, |t| t.branch_next)
                disabled=move || { busy.get() || at >= of }
                on:click=move |_| actions.switch.run((id, 1))>"›"</button>
        </span>
    }
}

/// The editor of a question: Save & send makes a new version of it.
fn edit_box(id: u32, text: String, actions: MessageActions) -> impl IntoView {
    let lang = use_lang();
    let draft = RwSignal::new(text);
    let input_ref = NodeRef::<leptos::html::Textarea>::new();
    let save = move || {
        let text = draft.get_untracked();
        if !text.trim().is_empty() && !actions.busy.get_untracked() {
            actions.editing.set(None);
            actions.resend.run((id, text));
        }
    };
    Effect::new(move |_| {
        if let Some(el) = input_ref.get() {
            let _ = el.focus();
        }
    });
    view! {
        <div class="edit-box">
            <textarea data-testid="edit-input" node_ref=input_ref rows="3"
                aria-label=tr(lang, |t| t.edit_label)
                prop:value=move || draft.get()
                on:input=move |ev| draft.set(event_target_value(&ev))
                on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                    if ev.key() == "Escape" {
                        ev.prevent_default();
                        ev.stop_propagation();
                        actions.editing.set(None);
                    }
                }></textarea>
            <div class="edit-actions">
                <button type="button" class="msg-button" on:click=move |_| actions.editing.set(None)>
                    {tr(lang, |t| t.cancel)}
                </button>
                <button type="button" class="send" data-testid="edit-save"
                    disabled=move || actions.busy.get() || draft.with(|d| d.trim().is_empty())
                    on:click=move |_| save()>
                    {tr(lang, |t| t.edit_save)}
                </button>
            </div>
        </div>
    }
}

/// The Copy button of a message: an answer copies as markdown, without its
/// thinking section; a question as typed.
#[cfg_attr(not(feature = "hydrate"), allow(unused_variables))]
fn copy_button(content: ArcRwSignal<String>, answer: bool) -> impl IntoView {
    let lang = use_lang();
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        content.with_untracked(|t| {
            crate::client::copy_text(if answer { split_think(t).2 } else { t })
        });
    };
    let label = move || {
        let t = lang.get().t();
        if answer {
            t.copy_answer
        } else {
            t.copy_message
        }
    };
    view! {
        <button type="button" class="msg-button copy-message" data-testid="copy-message"
            aria-label=label title=label on:click=copy>
            {tr(lang, |t| t.copy)}
        </button>
    }
}

/// An answer's body: its thinking section, its finished blocks and its
/// unfinished last block.
fn assistant_body(content: ArcRwSignal<String>, pending: ArcRwSignal<bool>) -> AnyView {
    let lang = use_lang();
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
                            {move || { let t = lang.get().t(); if closed { t.thinking } else { t.thinking_live } }}
                            <span class="thinking-size">{move || (lang.get().t().words)(&words.to_string())}</span>
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
