//! The conversations the page keeps, as they are stored (one IndexedDB
//! record each) and listed in the sidebar: titles, order, search, and the
//! migration of the single localStorage conversation of earlier versions.
//! Plain data and pure functions, tested in Rust.

use crate::api::{ChatMessage, ChatOptions, ChatRequest, FinishReason, Role};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// localStorage key of the one conversation earlier versions kept.
pub const LEGACY_KEY: &str = "kinko.chat.v1";
/// localStorage key saying that conversation was copied into IndexedDB
/// (the old key itself is left in place, so nothing is ever lost).
pub const LEGACY_MIGRATED_KEY: &str = "kinko.chat.v1.migrated";
/// The id the migrated conversation gets, the same in every tab, so two tabs
/// migrating at once write one record, not two.
pub const LEGACY_CHAT_ID: &str = "migrated-v1";
/// The version of the stored record's shape: 2 keeps every branch (each
/// message names its parent) and the chat's settings; a format-1 record
/// (one list of messages) is read as one branch.
pub const CHAT_FORMAT: u32 = 2;
/// The longest title taken from a first message, in characters.
const TITLE_CHARS: usize = 60;

/// A message as the UI keeps it: the text plus what happened to it. Every
/// branch of a conversation is kept: a message names its parent, and the
/// messages with the same parent are versions of one another (an edited
/// question, a regenerated answer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UiMessage {
    /// Unique within its chat, from 1 (0: a notice of the page, never
    /// stored; or a message of a format-1 chat not yet numbered).
    #[serde(default)]
    pub id: u32,
    /// The message it follows (`None`: the conversation's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// Who wrote it (`None`: a notice from the page, never sent).
    pub role: Option<Role>,
    /// The text so far.
    pub content: String,
    /// Text files sent with it (a question's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Still streaming.
    #[serde(default)]
    pub pending: bool,
    /// An error shown under the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Notes shown under the message (earlier versions kept their notes as
    /// English text; new answers keep [`AnswerStats`] instead).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// How the answer went (an answer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<AnswerStats>,
    /// When it was written, in milliseconds since 1970 (0: unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// A text file attached to a question: sent inlined, with its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file's name.
    pub name: String,
    /// Its text.
    pub text: String,
}

/// What the server said of one answer: its `meta` and `done` events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerStats {
    /// Milliseconds to the first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Tokens per second after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: usize,
    /// Tokens of the prompt the model read.
    #[serde(default)]
    pub prompt_tokens: usize,
    /// The context window the answer used.
    #[serde(default)]
    pub context_window: usize,
    /// Earlier messages left out to fit.
    #[serde(default)]
    pub trimmed_messages: usize,
    /// Left out for time, not for the window.
    #[serde(default)]
    pub trimmed_for_time: bool,
    /// Why it ended (`None`: still going, or the connection broke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<FinishReason>,
}

impl AnswerStats {
    /// The share of the window the last turn filled (prompt and answer),
    /// from 0 to 1; `None` when the window is unknown.
    pub fn context_share(&self) -> Option<f64> {
        (self.context_window > 0).then(|| {
            ((self.prompt_tokens + self.completion_tokens) as f64 / self.context_window as f64)
                .min(1.0)
        })
    }
}

/// The share of the window from which the gauge warns that earlier
/// messages will soon be left out.
pub const CONTEXT_WARN_SHARE: f64 = 0.75;

/// A chat's own settings: the same fields a model's preset sets; an empty
/// one falls back to the model's preset (its Modelfile), then to the
/// server's defaults.
pub use crate::api::Sampling as ChatSettings;

/// The localStorage record of earlier versions: one conversation.
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

/// One conversation: one IndexedDB record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    /// Stable id, the record's key.
    pub id: String,
    /// Shape version ([`CHAT_FORMAT`]).
    #[serde(default)]
    pub format: u32,
    /// Shown in the sidebar.
    pub title: String,
    /// Whether the person named it (then it no longer follows the first
    /// message).
    #[serde(default)]
    pub renamed: bool,
    /// The model the chat talks to.
    #[serde(default)]
    pub model: Option<String>,
    /// The chat's context size (`num_ctx`), when not the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<usize>,
    /// Pinned to the top of the list.
    #[serde(default)]
    pub pinned: bool,
    /// Created, in milliseconds since 1970.
    #[serde(default)]
    pub created: f64,
    /// Last activity, in milliseconds since 1970.
    #[serde(default)]
    pub updated: f64,
    /// Every message of every branch, in the order they were written.
    #[serde(default)]
    pub messages: Vec<UiMessage>,
    /// The last message of the branch on screen (`None`: the last written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    /// The chat's own system prompt and sampling.
    #[serde(default, skip_serializing_if = "ChatSettings::is_empty")]
    pub settings: ChatSettings,
}

/// What the sidebar shows of a chat.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSummary {
    /// The chat's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Pinned to the top.
    pub pinned: bool,
    /// Last activity.
    pub updated: f64,
}

impl Chat {
    /// An empty chat.
    pub fn new(id: String, model: Option<String>, now: f64) -> Self {
        Self {
            id,
            format: CHAT_FORMAT,
            title: String::new(),
            model,
            created: now,
            updated: now,
            ..Default::default()
        }
    }

    /// The title to show: the given one, else the first user message's
    /// (empty for a chat with neither: the page shows its word for "new
    /// chat").
    pub fn display_title(&self) -> String {
        if !self.title.trim().is_empty() {
            return self.title.clone();
        }
        self.messages
            .iter()
            .find(|m| m.role == Some(Role::User))
            .map(|m| title_from(&m.content))
            .unwrap_or_default()
    }

    /// The sidebar's view of it.
    pub fn summary(&self) -> ChatSummary {
        ChatSummary {
            id: self.id.clone(),
            title: self.display_title(),
            pinned: self.pinned,
            updated: self.updated,
        }
    }

    /// Whether `query` (already lowercased) is in its title or any message.
    pub fn matches(&self, query: &str) -> bool {
        query.is_empty()
            || self.display_title().to_lowercase().contains(query)
            || self
                .messages
                .iter()
                .any(|m| m.content.to_lowercase().contains(query))
    }

    /// Bring a record of an earlier format up to this one: a format-1
    /// chat's messages (none has an id) become one branch, numbered in
    /// order. In a damaged or hand-made record only what is broken is
    /// repaired: a missing or repeated id gets a new one, and a parent that
    /// is not there or not an earlier message (a loop) makes the message
    /// start a branch of its own. Nothing is dropped.
    pub fn normalize(&mut self) {
        if self.messages.iter().all(|m| m.id == 0) {
            let mut parent = None;
            for (i, m) in self.messages.iter_mut().enumerate() {
                let id = i as u32 + 1;
                m.id = id;
                m.parent = parent;
                parent = Some(id);
            }
            self.current = parent;
        } else {
            let mut next = self.messages.iter().map(|m| m.id).max().unwrap_or(0) + 1;
            let mut seen = std::collections::HashSet::new();
            for m in self.messages.iter_mut() {
                if m.id == 0 || !seen.insert(m.id) {
                    m.id = next;
                    next += 1;
                    seen.insert(m.id);
                }
            }
            for m in self.messages.iter_mut() {
                if m.parent.is_some_and(|p| p >= m.id || !seen.contains(&p)) {
                    m.parent = None;
                }
            }
        }
        if self.current.is_some_and(|c| self.index_of(c).is_none()) {
            self.current = None;
        }
        self.format = CHAT_FORMAT;
    }

    /// Where message `id` is in [`Chat::messages`].
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.messages.iter().position(|m| m.id == id)
    }

    /// The indices of the messages that follow `parent`, oldest first.
    pub fn children(&self, parent: Option<u32>) -> Vec<usize> {
        (0..self.messages.len())
            .filter(|&i| self.messages[i].parent == parent)
            .collect()
    }

    /// The branch on screen: indices into [`Chat::messages`], first to
    /// last.
    pub fn path(&self) -> Vec<usize> {
        let ids: HashMap<u32, usize> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect();
        let Some(mut at) = self
            .current
            .and_then(|c| ids.get(&c).copied())
            .or_else(|| self.messages.len().checked_sub(1))
        else {
            return Vec::new();
        };
        let mut path = vec![at];
        // A parent chain never revisits a message (a damaged record could
        // loop): at most one step per message.
        while let Some(parent) = self.messages[at].parent.and_then(|p| ids.get(&p).copied()) {
            if path.len() >= self.messages.len() {
                break;
            }
            path.push(parent);
            at = parent;
        }
        path.reverse();
        path
    }

    /// The branch on screen with each message's version: `(index, (which,
    /// of how many))`, in one pass over the chat (a long chat opens in
    /// linear time).
    pub fn branch(&self) -> Vec<(usize, (usize, usize))> {
        let mut siblings: HashMap<Option<u32>, Vec<usize>> = HashMap::new();
        for (i, m) in self.messages.iter().enumerate() {
            siblings.entry(m.parent).or_default().push(i);
        }
        self.path()
            .into_iter()
            .map(|i| {
                let list = &siblings[&self.messages[i].parent];
                let at = list.iter().position(|&j| j == i).unwrap_or(0);
                (i, (at + 1, list.len()))
            })
            .collect()
    }

    /// The messages of the branch on screen.
    pub fn visible(&self) -> Vec<UiMessage> {
        self.path()
            .into_iter()
            .map(|i| self.messages[i].clone())
            .collect()
    }

    /// Which version message `id` is among its siblings and how many there
    /// are: `(2, 3)` shows as `‹ 2/3 ›` (the page takes them all at once
    /// from [`Chat::branch`]).
    #[cfg(test)]
    pub fn version_of(&self, id: u32) -> (usize, usize) {
        let Some(parent) = self.index_of(id).map(|i| self.messages[i].parent) else {
            return (1, 1);
        };
        let siblings = self.children(parent);
        let at = siblings
            .iter()
            .position(|&i| self.messages[i].id == id)
            .unwrap_or(0);
        (at + 1, siblings.len().max(1))
    }

    /// The last message reached from `id` following the newest reply each
    /// time: where a branch picked at `id` ends.
    pub fn leaf_from(&self, id: u32) -> u32 {
        let mut leaf = id;
        for _ in 0..self.messages.len() {
            match self.children(Some(leaf)).last() {
                Some(&i) => leaf = self.messages[i].id,
                None => break,
            }
        }
        leaf
    }

    /// Show the version `step` away from message `id` (-1: the previous,
    /// 1: the next) and what follows it. Returns whether anything changed.
    pub fn switch_version(&mut self, id: u32, step: isize) -> bool {
        let Some(parent) = self.index_of(id).map(|i| self.messages[i].parent) else {
            return false;
        };
        let siblings = self.children(parent);
        let Some(at) = siblings.iter().position(|&i| self.messages[i].id == id) else {
            return false;
        };
        let Some(to) = at
            .checked_add_signed(step)
            .filter(|&t| t < siblings.len() && t != at)
        else {
            return false;
        };
        self.current = Some(self.leaf_from(self.messages[siblings[to]].id));
        true
    }

    /// A new id for a message of this chat.
    pub fn next_id(&self) -> u32 {
        self.messages.iter().map(|m| m.id).max().unwrap_or(0) + 1
    }

    /// Add `message` after `parent` and show it: it becomes the last
    /// message of the branch on screen. Returns its id.
    pub fn add(&mut self, parent: Option<u32>, mut message: UiMessage) -> u32 {
        let id = self.next_id();
        message.id = id;
        message.parent = parent;
        self.messages.push(message);
        self.current = Some(id);
        id
    }

    /// Store these messages of the branch on screen as they are now (each
    /// replaces the stored message with its id; notices, id 0, are not
    /// stored) and make the last of them the current one.
    pub fn update_branch(&mut self, branch: &[UiMessage]) {
        let ids: HashMap<u32, usize> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect();
        for m in branch.iter().filter(|m| m.id > 0) {
            match ids.get(&m.id) {
                Some(&i) => self.messages[i] = m.clone(),
                None => self.messages.push(m.clone()),
            }
        }
        if let Some(last) = branch.iter().rev().find(|m| m.id > 0) {
            self.current = Some(last.id);
        }
    }

    /// The request for the answer that follows the branch on screen up to
    /// and including message `upto`: the chat's system prompt (when it has
    /// one; else the server uses the model's preset), the branch's history
    /// and the chat's settings.
    pub fn request(&self, model: String, upto: u32) -> ChatRequest {
        let mut branch = self.visible();
        if let Some(end) = branch.iter().position(|m| m.id == upto) {
            branch.truncate(end + 1);
        }
        let mut messages = Vec::new();
        if let Some(system) = self
            .settings
            .system
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            messages.push(ChatMessage::new(Role::System, system));
        }
        messages.extend(history_for_request(&branch));
        let s = &self.settings;
        ChatRequest {
            model,
            messages,
            options: ChatOptions {
                temperature: s.temperature,
                top_p: s.top_p,
                top_k: s.top_k,
                max_tokens: s.max_tokens,
                num_ctx: self.num_ctx,
                ..ChatOptions::default()
            },
            format: None,
            tools: Vec::new(),
        }
    }

    /// The earlier versions' conversation as a chat of its own. A message
    /// that was streaming when that page closed is kept with a note.
    pub fn from_legacy(saved: SavedChat, now: f64) -> Self {
        let mut messages = saved.messages;
        for m in messages.iter_mut().filter(|m| m.pending) {
            m.pending = false;
            m.notes.push("Interrupted by a page reload.".into());
        }
        let mut chat = Self {
            id: LEGACY_CHAT_ID.into(),
            model: saved.model,
            num_ctx: saved.num_ctx,
            created: now,
            updated: now,
            messages,
            ..Default::default()
        };
        chat.normalize();
        chat
    }
}

/// A title from a first message: its first line, at most 60 characters.
pub fn title_from(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() > TITLE_CHARS {
        let cut: String = line.chars().take(TITLE_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        line.to_string()
    }
}

/// Sidebar order: pinned first, then most recent activity first.
pub fn sort_summaries(list: &mut [ChatSummary]) {
    list.sort_by(|a, b| {
        b.pinned
            .cmp(&a.pinned)
            .then(b.updated.total_cmp(&a.updated))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// The text of an answer without its `<think>…</think>` section (what is
/// sent back to the model and copied), and that section's text if any:
/// `(thinking, closed, answer)`.
pub fn split_think(text: &str) -> (Option<&str>, bool, &str) {
    let trimmed = text.trim_start();
    let Some(rest) = trimmed.strip_prefix("<think>") else {
        return (None, false, text);
    };
    match rest.find("</think>") {
        Some(end) => (
            Some(&rest[..end]),
            true,
            rest[end + "</think>".len()..].trim_start(),
        ),
        None => (Some(rest), false, ""),
    }
}

/// The history to send: every user message (with its attachments inlined)
/// and every assistant answer with text (without its thinking), oldest
/// first.
pub fn history_for_request(messages: &[UiMessage]) -> Vec<ChatMessage> {
    messages
        .iter()
        .filter_map(|m| {
            let role = m.role?;
            let text = match role {
                Role::Assistant => split_think(&m.content).2.to_string(),
                _ if m.attachments.is_empty() => m.content.clone(),
                _ => with_attachments(&m.content, &m.attachments),
            };
            (!text.trim().is_empty()).then(|| ChatMessage::new(role, text))
        })
        .collect()
}

/// A question with its files inlined after it, each in a fenced block
/// under its name; the fence is longer than any backtick run in the file.
pub fn with_attachments(text: &str, files: &[Attachment]) -> String {
    let mut out = text.trim_end().to_string();
    for f in files {
        let longest = f.text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&format!(
            "File `{}`:\n{fence}\n{}\n{fence}",
            f.name.replace('`', "'"),
            f.text.trim_end_matches('\n')
        ));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A message with this role and text (for tests here and beside).
    pub(crate) fn msg(role: Role, text: &str) -> UiMessage {
        UiMessage {
            role: Some(role),
            content: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn history_skips_notices_empty_answers_and_thinking() {
        let msgs = vec![
            msg(Role::User, "hi"),
            UiMessage {
                role: Some(Role::Assistant),
                error: Some("x".into()),
                ..Default::default()
            },
            UiMessage {
                role: None,
                error: Some("Pick a model first.".into()),
                ..Default::default()
            },
            msg(Role::User, "again"),
            msg(Role::Assistant, "<think>secret plan</think>\n\nThe answer."),
            msg(Role::User, "more"),
        ];
        assert_eq!(
            history_for_request(&msgs),
            vec![
                ChatMessage::new(Role::User, "hi"),
                ChatMessage::new(Role::User, "again"),
                ChatMessage::new(Role::Assistant, "The answer."),
                ChatMessage::new(Role::User, "more"),
            ]
        );
    }

    #[test]
    fn think_sections_split_open_and_closed() {
        assert_eq!(split_think("plain"), (None, false, "plain"));
        assert_eq!(split_think("<think>a b"), (Some("a b"), false, ""));
        assert_eq!(split_think(" <think>a</think> b"), (Some("a"), true, "b"));
        // Only a leading section counts.
        assert_eq!(
            split_think("x <think>y</think>"),
            (None, false, "x <think>y</think>")
        );
    }

    #[test]
    fn titles_come_from_the_first_user_message_unless_renamed() {
        let mut chat = Chat::new("a".into(), None, 1.0);
        assert_eq!(chat.display_title(), "");
        chat.messages
            .push(msg(Role::User, "\n  What is Rust?\nmore lines"));
        assert_eq!(chat.display_title(), "What is Rust?");
        chat.title = "Rust notes".into();
        assert_eq!(chat.display_title(), "Rust notes");
        let long = "x".repeat(100);
        let t = title_from(&long);
        assert_eq!(t.chars().count(), 60);
        assert!(t.ends_with('…'));
    }

    #[test]
    fn pinned_first_then_newest() {
        let s = |id: &str, pinned, updated| ChatSummary {
            id: id.into(),
            title: id.into(),
            pinned,
            updated,
        };
        let mut list = vec![
            s("old", false, 1.0),
            s("pin", true, 0.5),
            s("new", false, 9.0),
        ];
        sort_summaries(&mut list);
        let ids: Vec<_> = list.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["pin", "new", "old"]);
    }

    #[test]
    fn search_looks_at_titles_and_message_text() {
        let mut chat = Chat::new("a".into(), None, 1.0);
        chat.messages.push(msg(Role::User, "Tell me about Kyoto"));
        chat.messages
            .push(msg(Role::Assistant, "Kyoto has many TEMPLES."));
        assert!(chat.matches("kyoto"));
        assert!(chat.matches("temples"));
        assert!(chat.matches(""));
        assert!(!chat.matches("osaka"));
    }

    #[test]
    fn the_legacy_conversation_becomes_a_chat_with_everything_in_it() {
        let legacy = r#"{"model":"smollm2:135m","num_ctx":2048,"messages":[
            {"role":"user","content":"first"},
            {"role":"assistant","content":"half an ans","pending":true},
            {"role":null,"content":"","error":"Pick a model first."}]}"#;
        let saved: SavedChat = serde_json::from_str(legacy).unwrap();
        let chat = Chat::from_legacy(saved, 5.0);
        assert_eq!(chat.id, LEGACY_CHAT_ID);
        assert_eq!(chat.format, CHAT_FORMAT);
        assert_eq!(chat.model.as_deref(), Some("smollm2:135m"));
        assert_eq!(chat.num_ctx, Some(2048));
        assert_eq!(chat.messages.len(), 3);
        assert_eq!(chat.visible().len(), 3);
        assert!(!chat.messages[1].pending);
        assert_eq!(chat.messages[1].content, "half an ans");
        assert_eq!(chat.messages[1].notes, ["Interrupted by a page reload."]);
        assert_eq!(chat.display_title(), "first");
        let text = serde_json::to_string(&chat).unwrap();
        assert_eq!(serde_json::from_str::<Chat>(&text).unwrap(), chat);
    }

    /// A record as format 1 stored it: one list, no ids.
    const FORMAT_1: &str = r#"{"id":"c1","format":1,"title":"","renamed":false,
        "model":"fake:latest","pinned":true,"created":1.0,"updated":2.0,"messages":[
        {"role":"user","content":"q1"},{"role":"assistant","content":"a1","notes":["Stopped."]},
        {"role":"user","content":"q2"},{"role":"assistant","content":"a2"}]}"#;

    #[test]
    fn a_format_1_chat_becomes_one_branch_with_nothing_dropped() {
        let mut chat: Chat = serde_json::from_str(FORMAT_1).unwrap();
        chat.normalize();
        assert_eq!(chat.format, CHAT_FORMAT);
        assert!(chat.pinned);
        let ids: Vec<_> = chat.messages.iter().map(|m| (m.id, m.parent)).collect();
        assert_eq!(ids, [(1, None), (2, Some(1)), (3, Some(2)), (4, Some(3))]);
        assert_eq!(chat.current, Some(4));
        let texts: Vec<_> = chat.visible().into_iter().map(|m| m.content).collect();
        assert_eq!(texts, ["q1", "a1", "q2", "a2"]);
        assert_eq!(chat.messages[1].notes, ["Stopped."]);
        assert_eq!(chat.version_of(3), (1, 1));
        // Normalising again changes nothing; the stored form reads back.
        let once = chat.clone();
        chat.normalize();
        assert_eq!(chat, once);
        let text = serde_json::to_string(&chat).unwrap();
        assert_eq!(serde_json::from_str::<Chat>(&text).unwrap(), chat);
    }

    #[test]
    fn damage_is_repaired_where_it_is_and_nothing_is_dropped() {
        let mut chat: Chat = serde_json::from_str(FORMAT_1).unwrap();
        chat.normalize();
        chat.messages[2].id = 1; // a repeated id
        chat.messages[3].parent = Some(99); // a parent that is not there
        chat.normalize();
        let ids: Vec<_> = chat.messages.iter().map(|m| (m.id, m.parent)).collect();
        // The repeated id gets a new one and keeps its parent; the orphan
        // starts a branch of its own; the rest is as it was.
        assert_eq!(ids, [(1, None), (2, Some(1)), (5, Some(2)), (4, None)]);
        assert_eq!(chat.messages.len(), 4);
        assert_eq!(chat.version_of(4), (2, 2));
        // A loop of parents ends the walk instead of hanging, and
        // normalising breaks it where it points forward.
        chat.messages[0].parent = Some(5);
        assert!(chat.path().len() <= 4);
        chat.normalize();
        assert_eq!(chat.messages[0].parent, None);
        chat.current = Some(5);
        let shown: Vec<_> = chat.visible().into_iter().map(|m| m.content).collect();
        assert_eq!(shown, ["q1", "a1", "q2"]);
    }

    fn asked(chat: &mut Chat, parent: Option<u32>, q: &str, a: &str) -> (u32, u32) {
        let q = chat.add(parent, msg(Role::User, q));
        let a = chat.add(Some(q), msg(Role::Assistant, a));
        (q, a)
    }

    fn shown(chat: &Chat) -> Vec<String> {
        chat.visible().into_iter().map(|m| m.content).collect()
    }

    #[test]
    fn regenerating_keeps_both_answers_as_versions() {
        let mut chat = Chat::new("c".into(), None, 0.0);
        let (q1, a1) = asked(&mut chat, None, "q1", "a1");
        let regen = chat.add(Some(q1), msg(Role::Assistant, "a1 again"));
        assert_eq!(shown(&chat), ["q1", "a1 again"]);
        assert_eq!(chat.version_of(regen), (2, 2));
        assert_eq!(chat.version_of(a1), (1, 2));
        assert!(chat.switch_version(regen, -1));
        assert_eq!(shown(&chat), ["q1", "a1"]);
        // Past either end nothing moves.
        assert!(!chat.switch_version(a1, -1));
        assert!(chat.switch_version(a1, 1));
        assert_eq!(shown(&chat), ["q1", "a1 again"]);
        assert!(!chat.switch_version(regen, 1));
    }

    #[test]
    fn an_edit_starts_a_branch_and_what_follows_belongs_to_it() {
        let mut chat = Chat::new("c".into(), None, 0.0);
        let (q1, a1) = asked(&mut chat, None, "q1", "a1");
        let (q2, _) = asked(&mut chat, Some(a1), "q2", "a2");
        let last = chat.current;
        asked(&mut chat, last, "q3", "a3");
        // Edit q2: a sibling of q2 after a1, with its own answer.
        let (q2b, a2b) = asked(&mut chat, Some(a1), "q2 edited", "a2b");
        assert_eq!(shown(&chat), ["q1", "a1", "q2 edited", "a2b"]);
        assert_eq!(chat.version_of(q2b), (2, 2));
        // The first version comes back with everything that followed it.
        assert!(chat.switch_version(q2b, -1));
        assert_eq!(shown(&chat), ["q1", "a1", "q2", "a2", "q3", "a3"]);
        assert_eq!(chat.version_of(q2), (1, 2));
        let versions: Vec<_> = chat.branch().into_iter().map(|(_, v)| v).collect();
        assert_eq!(versions, [(1, 1), (1, 1), (1, 2), (1, 1), (1, 1), (1, 1)]);
        // Editing the very first question makes a second root.
        let (r2, _) = asked(&mut chat, None, "q1 edited", "a1b");
        assert_eq!(shown(&chat), ["q1 edited", "a1b"]);
        assert_eq!(chat.version_of(r2), (2, 2));
        assert!(chat.switch_version(r2, -1));
        assert_eq!(chat.version_of(q1), (1, 2));
        // The newest reply is followed: q2's second version.
        assert_eq!(shown(&chat), ["q1", "a1", "q2 edited", "a2b"]);
        assert_eq!(chat.current, Some(a2b));
        // The stored form keeps every branch.
        let text = serde_json::to_string(&chat).unwrap();
        assert_eq!(serde_json::from_str::<Chat>(&text).unwrap(), chat);
    }

    #[test]
    fn the_request_carries_the_branch_on_screen_and_the_chats_settings() {
        let mut chat = Chat::new("c".into(), Some("m".into()), 0.0);
        let (q1, a1) = asked(&mut chat, None, "q1", "a1");
        asked(&mut chat, Some(a1), "q2", "a2");
        let q2b = chat.add(
            Some(a1),
            UiMessage {
                attachments: vec![Attachment {
                    name: "notes.md".into(),
                    text: "has ``` inside\n".into(),
                }],
                ..msg(Role::User, "q2 edited")
            },
        );
        chat.settings = ChatSettings {
            system: Some("Answer in haiku.".into()),
            temperature: Some(0.2),
            top_k: Some(5),
            ..Default::default()
        };
        chat.num_ctx = Some(2048);
        let req = chat.request("m".into(), q2b);
        assert_eq!(req.model, "m");
        assert_eq!(
            req.messages,
            vec![
                ChatMessage::new(Role::System, "Answer in haiku."),
                ChatMessage::new(Role::User, "q1"),
                ChatMessage::new(Role::Assistant, "a1"),
                ChatMessage::new(
                    Role::User,
                    "q2 edited\n\nFile `notes.md`:\n````\nhas ``` inside\n````"
                ),
            ]
        );
        assert_eq!(req.options.temperature, Some(0.2));
        assert_eq!(req.options.top_k, Some(5));
        assert_eq!(req.options.top_p, None);
        assert_eq!(req.options.num_ctx, Some(2048));
        // Up to a message of the branch: what follows it is not sent.
        let req = chat.request("m".into(), q1);
        assert_eq!(req.messages.len(), 2);
        // No system prompt of its own: none is sent (the preset's applies).
        chat.settings.system = Some("  ".into());
        assert_eq!(chat.request("m".into(), q1).messages.len(), 1);
    }

    #[test]
    fn the_branch_on_screen_is_stored_by_id() {
        let mut chat = Chat::new("c".into(), None, 0.0);
        let (_, a1) = asked(&mut chat, None, "q1", "");
        let mut branch = chat.visible();
        branch[1].content = "streamed".into();
        branch.push(UiMessage {
            role: None,
            error: Some("a notice".into()),
            ..Default::default()
        });
        chat.update_branch(&branch);
        assert_eq!(chat.messages.len(), 2);
        assert_eq!(chat.messages[1].content, "streamed");
        assert_eq!(chat.current, Some(a1));
    }

    #[test]
    fn the_gauge_share_counts_prompt_and_answer() {
        let s = AnswerStats {
            prompt_tokens: 600,
            completion_tokens: 200,
            context_window: 1000,
            ..Default::default()
        };
        assert_eq!(s.context_share(), Some(0.8));
        assert!(s.context_share().unwrap() >= CONTEXT_WARN_SHARE);
        assert_eq!(AnswerStats::default().context_share(), None);
    }
}
