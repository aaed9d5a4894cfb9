//! The conversations the page keeps, as they are stored (one IndexedDB
//! record each) and listed in the sidebar: titles, order, search, and the
//! migration of the single localStorage conversation of earlier versions.
//! Plain data and pure functions, tested in Rust.

use crate::api::{ChatMessage, Role};
use serde::{Deserialize, Serialize};

/// localStorage key of the one conversation earlier versions kept.
pub const LEGACY_KEY: &str = "kinko.chat.v1";
/// localStorage key saying that conversation was copied into IndexedDB
/// (the old key itself is left in place, so nothing is ever lost).
pub const LEGACY_MIGRATED_KEY: &str = "kinko.chat.v1.migrated";
/// The id the migrated conversation gets, the same in every tab, so two tabs
/// migrating at once write one record, not two.
pub const LEGACY_CHAT_ID: &str = "migrated-v1";
/// The version of the stored record's shape.
pub const CHAT_FORMAT: u32 = 1;
/// The longest title taken from a first message, in characters.
const TITLE_CHARS: usize = 60;

/// A message as the UI keeps it: the text plus what happened to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UiMessage {
    /// Who wrote it (`None`: a notice from the page, never sent).
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
    /// The conversation, oldest first.
    #[serde(default)]
    pub messages: Vec<UiMessage>,
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

    /// The title to show: the given one, else the first user message's.
    pub fn display_title(&self) -> String {
        if !self.title.trim().is_empty() {
            return self.title.clone();
        }
        self.messages
            .iter()
            .find(|m| m.role == Some(Role::User))
            .map(|m| title_from(&m.content))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "New chat".into())
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

    /// The earlier versions' conversation as a chat of its own. A message
    /// that was streaming when that page closed is kept with a note.
    pub fn from_legacy(saved: SavedChat, now: f64) -> Self {
        let mut messages = saved.messages;
        for m in messages.iter_mut().filter(|m| m.pending) {
            m.pending = false;
            m.notes.push("Interrupted by a page reload.".into());
        }
        Self {
            id: LEGACY_CHAT_ID.into(),
            format: CHAT_FORMAT,
            model: saved.model,
            num_ctx: saved.num_ctx,
            created: now,
            updated: now,
            messages,
            ..Default::default()
        }
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

/// The history to send: every user message and every assistant answer with
/// text (without its thinking), oldest first.
pub fn history_for_request(messages: &[UiMessage]) -> Vec<ChatMessage> {
    messages
        .iter()
        .filter_map(|m| {
            let role = m.role?;
            let text = match role {
                Role::Assistant => split_think(&m.content).2,
                _ => m.content.as_str(),
            };
            (!text.trim().is_empty()).then(|| ChatMessage::new(role, text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, text: &str) -> UiMessage {
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
        assert_eq!(chat.display_title(), "New chat");
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
        assert_eq!(chat.model.as_deref(), Some("smollm2:135m"));
        assert_eq!(chat.num_ctx, Some(2048));
        assert_eq!(chat.messages.len(), 3);
        assert!(!chat.messages[1].pending);
        assert_eq!(chat.messages[1].content, "half an ans");
        assert_eq!(chat.messages[1].notes, ["Interrupted by a page reload."]);
        assert_eq!(chat.display_title(), "first");
        let text = serde_json::to_string(&chat).unwrap();
        assert_eq!(serde_json::from_str::<Chat>(&text).unwrap(), chat);
    }
}
