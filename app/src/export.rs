//! Export and import of conversations. kinko's own format is versioned
//! JSON with every branch of every chat (described in the README); one chat
//! also exports as Markdown (the branch on screen). Import takes kinko's
//! format and Open WebUI's chat export (a list of chats, each a tree of
//! messages keyed by id with `parentId`/`childrenIds` and a `currentId`),
//! branches included. A file is read whole before anything changes: a bad
//! one changes nothing.

use crate::api::Role;
use crate::chats::{split_think, with_attachments, Chat, UiMessage, CHAT_FORMAT};
use crate::i18n::Lang;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};

/// The `kind` of kinko's export file.
pub const EXPORT_KIND: &str = "kinko.chats";
/// The version of kinko's export file this page writes (and the newest it
/// reads).
pub const EXPORT_VERSION: u32 = 1;
/// The prefix of the ids of chats imported from Open WebUI (so importing
/// the same file twice adds nothing).
pub const OPEN_WEBUI_PREFIX: &str = "owui-";

/// kinko's export file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportFile {
    /// Always [`EXPORT_KIND`].
    pub kind: String,
    /// [`EXPORT_VERSION`] when written.
    pub version: u32,
    /// When it was written, in milliseconds since 1970.
    #[serde(default)]
    pub exported: f64,
    /// The chats, each with every branch.
    pub chats: Vec<Chat>,
}

/// Why a file could not be imported.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportError {
    /// Not JSON at all.
    NotJson(String),
    /// JSON, but neither kinko's export nor Open WebUI's.
    UnknownShape,
    /// kinko's export from a newer version.
    TooNew(u32),
    /// One chat of the file is not usable.
    BadChat {
        /// Its place in the file, from 1.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file has no chats.
    Empty,
}

impl ImportError {
    /// The reason, in the page's language.
    pub fn message(&self, lang: Lang) -> String {
        match (self, lang) {
            (ImportError::NotJson(e), Lang::En) => format!("it is not JSON ({e})"),
            (ImportError::NotJson(e), Lang::Ja) => format!("JSON ではありません（{e}）"),
            (ImportError::UnknownShape, Lang::En) => {
                "it is neither kinko's export nor Open WebUI's chat export".into()
            }
            (ImportError::UnknownShape, Lang::Ja) => {
                "kinko の書き出しファイルでも Open WebUI のチャット書き出しファイルでもありません"
                    .into()
            }
            (ImportError::TooNew(v), Lang::En) => {
                format!("it was written by a newer kinko (format {v}; this page reads up to {EXPORT_VERSION})")
            }
            (ImportError::TooNew(v), Lang::Ja) => {
                format!("新しい kinko で書き出されたファイルです（形式 {v}。このページが読めるのは {EXPORT_VERSION} まで）")
            }
            (ImportError::BadChat { index, reason }, Lang::En) => {
                format!("chat {index} of the file is damaged ({reason})")
            }
            (ImportError::BadChat { index, reason }, Lang::Ja) => {
                format!("ファイルの {index} 番目のチャットが壊れています（{reason}）")
            }
            (ImportError::Empty, Lang::En) => "it holds no chats".into(),
            (ImportError::Empty, Lang::Ja) => "チャットが 1 件も入っていません".into(),
        }
    }
}

/// kinko's export of `chats`, as pretty JSON.
pub fn export_json(chats: Vec<Chat>, now: f64) -> String {
    let file = ExportFile {
        kind: EXPORT_KIND.into(),
        version: EXPORT_VERSION,
        exported: now,
        chats,
    };
    serde_json::to_string_pretty(&file).unwrap_or_default()
}

/// The branch on screen of `chat` as Markdown: its title, then each
/// message under its author (answers without their thinking).
pub fn export_markdown(chat: &Chat, lang: Lang) -> String {
    let title = Some(chat.display_title())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| lang.t().untitled.to_string());
    let mut out = format!("# {title}\n");
    let model = chat.model.clone().unwrap_or_else(|| "kinko".into());
    for m in chat.visible() {
        let (who, text) = match m.role {
            Some(Role::User) => (
                lang.t().you.to_string(),
                with_attachments(&m.content, &m.attachments),
            ),
            Some(Role::Assistant) => (model.clone(), split_think(&m.content).2.to_string()),
            Some(Role::System) => ("System".into(), m.content.clone()),
            None => continue,
        };
        out.push_str(&format!("\n## {who}\n\n{}\n", text.trim_end()));
    }
    out
}

/// A file name for people from a chat's title: `kinko-kyoto-trip.md`.
pub fn file_name(title: &str, extension: &str) -> String {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.chars().count() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        format!("kinko-chat.{extension}")
    } else {
        format!("kinko-{slug}.{extension}")
    }
}

/// Read an import file: kinko's export or Open WebUI's. Returns the chats,
/// each checked and brought to this format; nothing is half-read.
pub fn import(text: &str, now: f64) -> Result<Vec<Chat>, ImportError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ImportError::NotJson(e.to_string()))?;
    let chats = match &value {
        Value::Object(o) if o.get("kind").and_then(Value::as_str) == Some(EXPORT_KIND) => {
            let version = o.get("version").and_then(Value::as_u64).unwrap_or(0) as u32;
            if version > EXPORT_VERSION {
                return Err(ImportError::TooNew(version));
            }
            let list = o
                .get("chats")
                .and_then(Value::as_array)
                .ok_or(ImportError::UnknownShape)?;
            list.iter()
                .enumerate()
                .map(|(i, c)| {
                    kinko_chat(c).map_err(|reason| ImportError::BadChat {
                        index: i + 1,
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Value::Array(list) if list.iter().all(is_open_webui_chat) && !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, c)| {
                open_webui_chat(c, now).map_err(|reason| ImportError::BadChat {
                    index: i + 1,
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Array(list) if list.is_empty() => return Err(ImportError::Empty),
        _ => return Err(ImportError::UnknownShape),
    };
    if chats.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(chats)
}

fn kinko_chat(value: &Value) -> Result<Chat, String> {
    let mut chat: Chat = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    if chat.id.trim().is_empty() {
        return Err("it has no id".into());
    }
    for m in chat.messages.iter_mut() {
        m.pending = false;
    }
    chat.normalize();
    Ok(chat)
}

fn is_open_webui_chat(value: &Value) -> bool {
    value
        .pointer("/chat/history/messages")
        .is_some_and(Value::is_object)
}

/// The text of an Open WebUI message's content: a string, or the `text` of
/// each part of a list.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Seconds or milliseconds since 1970 (Open WebUI writes seconds), as
/// milliseconds.
fn millis(value: Option<&Value>) -> Option<f64> {
    let v = value?.as_f64()?;
    Some(if v < 1e11 { v * 1000.0 } else { v })
}

fn open_webui_chat(value: &Value, now: f64) -> Result<Chat, String> {
    let inner = &value["chat"];
    let nodes = inner
        .pointer("/history/messages")
        .and_then(Value::as_object)
        .ok_or("no history.messages")?;
    // Parents before children: a walk from the first messages, each
    // message's replies in `childrenIds` order; a message whose parent is
    // missing (or a loop) starts a branch of its own. Nothing is dropped.
    let parent_of = |id: &str| -> Option<String> {
        nodes
            .get(id)?
            .get("parentId")
            .and_then(Value::as_str)
            .filter(|p| nodes.contains_key(*p) && *p != id)
            .map(str::to_string)
    };
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    let mut roots = Vec::new();
    let mut keys: Vec<&String> = nodes.keys().collect();
    keys.sort_by(|a, b| {
        let ta = nodes[a.as_str()]
            .get("timestamp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let tb = nodes[b.as_str()]
            .get("timestamp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        ta.total_cmp(&tb)
    });
    for id in &keys {
        match parent_of(id) {
            Some(p) => children.entry(p).or_default().push((*id).clone()),
            None => roots.push((*id).clone()),
        }
    }
    // Follow childrenIds' order where it is given.
    for (parent, kids) in children.iter_mut() {
        if let Some(order) = nodes[parent.as_str()]
            .get("childrenIds")
            .and_then(Value::as_array)
        {
            let rank: HashMap<&str, usize> = order
                .iter()
                .filter_map(Value::as_str)
                .enumerate()
                .map(|(i, id)| (id, i))
                .collect();
            kids.sort_by_key(|k| rank.get(k.as_str()).copied().unwrap_or(usize::MAX));
        }
    }
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut placed: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<String> = roots.into();
    let mut rest = keys.iter().map(|k| (*k).clone());
    loop {
        while let Some(id) = queue.pop_front() {
            if !placed.insert(id.clone()) {
                continue;
            }
            order.push(id.clone());
            queue.extend(children.get(&id).cloned().unwrap_or_default());
        }
        // Messages in a loop of parents: the first one left starts a branch.
        match rest.find(|k| !placed.contains(k)) {
            Some(k) => queue.push_back(k),
            None => break,
        }
    }
    let mut messages = Vec::with_capacity(order.len());
    for (i, key) in order.iter().enumerate() {
        ids.insert(key.clone(), i as u32 + 1);
    }
    for key in &order {
        let node = &nodes[key.as_str()];
        let role = match node.get("role").and_then(Value::as_str) {
            Some("user") => Some(Role::User),
            Some("assistant") => Some(Role::Assistant),
            Some("system") => Some(Role::System),
            Some(other) => return Err(format!("a message has the role `{other}`")),
            None => return Err("a message has no role".into()),
        };
        messages.push(UiMessage {
            id: ids[key],
            parent: parent_of(key)
                .and_then(|p| ids.get(&p).copied())
                .filter(|&p| p < ids[key]),
            role,
            content: content_text(node.get("content")),
            created: millis(node.get("timestamp")).unwrap_or(0.0),
            ..Default::default()
        });
    }
    let title = value
        .get("title")
        .or_else(|| inner.get("title"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    let id = value
        .get("id")
        .or_else(|| inner.get("id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| format!("{OPEN_WEBUI_PREFIX}{s}"))
        .ok_or("it has no id")?;
    let model = inner
        .get("models")
        .and_then(Value::as_array)
        .and_then(|m| m.first())
        .and_then(Value::as_str)
        .map(str::to_string);
    let created = millis(value.get("created_at")).unwrap_or(now);
    let mut chat = Chat {
        id,
        format: CHAT_FORMAT,
        renamed: !title.is_empty() && title != "New Chat",
        title: if title == "New Chat" {
            String::new()
        } else {
            title
        },
        model,
        pinned: value
            .get("pinned")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        created,
        updated: millis(value.get("updated_at")).unwrap_or(created),
        current: inner
            .pointer("/history/currentId")
            .and_then(Value::as_str)
            .and_then(|c| ids.get(c).copied()),
        messages,
        ..Default::default()
    };
    if let Some(system) = inner
        .pointer("/params/system")
        .or_else(|| inner.get("system"))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    {
        chat.settings.system = Some(system.to_string());
    }
    chat.normalize();
    Ok(chat)
}

/// Which imported chats to add: one already stored unchanged is skipped;
/// one whose id is taken by a different chat comes in under a new id.
/// Returns the chats to add and how many were skipped.
pub fn merge_imported(
    existing: &HashMap<String, Chat>,
    imported: Vec<Chat>,
    mut new_id: impl FnMut() -> String,
) -> (Vec<Chat>, usize) {
    let mut add = Vec::new();
    let mut skipped = 0;
    let mut taken: HashSet<String> = existing.keys().cloned().collect();
    for mut chat in imported {
        match existing.get(&chat.id) {
            Some(old) if old.messages == chat.messages => skipped += 1,
            _ if taken.contains(&chat.id) => {
                chat.id = new_id();
                taken.insert(chat.id.clone());
                add.push(chat);
            }
            _ => {
                taken.insert(chat.id.clone());
                add.push(chat);
            }
        }
    }
    (add, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chats::tests::msg;
    use crate::chats::Attachment;

    fn branched() -> Chat {
        let mut chat = Chat::new("c1".into(), Some("fake:latest".into()), 10.0);
        let q = chat.add(None, msg(Role::User, "Kyoto?"));
        chat.add(Some(q), msg(Role::Assistant, "<think>hm</think>Temples."));
        chat.add(Some(q), msg(Role::Assistant, "Shrines."));
        chat.settings.temperature = Some(0.3);
        chat
    }

    #[test]
    fn kinko_export_reads_back_with_every_branch() {
        let chat = branched();
        let text = export_json(vec![chat.clone()], 99.0);
        let file: ExportFile = serde_json::from_str(&text).unwrap();
        assert_eq!(file.kind, EXPORT_KIND);
        assert_eq!(file.version, EXPORT_VERSION);
        let back = import(&text, 0.0).unwrap();
        assert_eq!(back, vec![chat]);
        assert_eq!(back[0].messages.len(), 3);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(matches!(
            import("not json", 0.0),
            Err(ImportError::NotJson(_))
        ));
        assert_eq!(import("{\"a\":1}", 0.0), Err(ImportError::UnknownShape));
        assert_eq!(import("[]", 0.0), Err(ImportError::Empty));
        assert_eq!(import("[{\"x\":1}]", 0.0), Err(ImportError::UnknownShape));
        let newer = r#"{"kind":"kinko.chats","version":9,"chats":[]}"#;
        assert_eq!(import(newer, 0.0), Err(ImportError::TooNew(9)));
        let empty = r#"{"kind":"kinko.chats","version":1,"chats":[]}"#;
        assert_eq!(import(empty, 0.0), Err(ImportError::Empty));
        let bad = r#"{"kind":"kinko.chats","version":1,"chats":[{"id":"a","title":""},{"id":"b","title":5}]}"#;
        assert!(matches!(
            import(bad, 0.0),
            Err(ImportError::BadChat { index: 2, .. })
        ));
        for e in [
            ImportError::UnknownShape,
            ImportError::Empty,
            ImportError::TooNew(3),
        ] {
            assert!(!e.message(Lang::En).is_empty());
            assert!(!e.message(Lang::Ja).is_empty());
        }
    }

    /// Open WebUI's export of one chat with an edited question (two
    /// versions) and a regenerated answer, as its "Export chat" writes it.
    pub const OPEN_WEBUI: &str = r#"[{
      "id": "9f1c", "user_id": "u1", "title": "Kyoto trip", "pinned": true,
      "created_at": 1732000000, "updated_at": 1732000300,
      "chat": {
        "id": "", "title": "Kyoto trip", "models": ["llama3.2:1b"],
        "params": {"system": "Be brief."},
        "history": {
          "currentId": "a2",
          "messages": {
            "q1": {"id": "q1", "parentId": null, "childrenIds": ["a1", "a1b"], "role": "user", "content": "Plan a day in Kyoto", "timestamp": 1732000000},
            "a1": {"id": "a1", "parentId": "q1", "childrenIds": ["q2"], "role": "assistant", "content": "Start at Fushimi Inari.", "model": "llama3.2:1b", "timestamp": 1732000010},
            "a1b": {"id": "a1b", "parentId": "q1", "childrenIds": [], "role": "assistant", "content": "Begin with Kiyomizu-dera.", "timestamp": 1732000020},
            "q2": {"id": "q2", "parentId": "a1", "childrenIds": ["a2"], "role": "user", "content": "And lunch?", "timestamp": 1732000030},
            "a2": {"id": "a2", "parentId": "q2", "childrenIds": [], "role": "assistant", "content": "Nishiki Market.", "timestamp": 1732000040}
          }
        },
        "messages": []
      }
    }]"#;

    #[test]
    fn open_webui_exports_come_in_with_their_branches() {
        let chats = import(OPEN_WEBUI, 0.0).unwrap();
        assert_eq!(chats.len(), 1);
        let c = &chats[0];
        assert_eq!(c.id, "owui-9f1c");
        assert_eq!(c.title, "Kyoto trip");
        assert!(c.pinned);
        assert_eq!(c.model.as_deref(), Some("llama3.2:1b"));
        assert_eq!(c.settings.system.as_deref(), Some("Be brief."));
        assert_eq!(c.created, 1_732_000_000_000.0);
        assert_eq!(c.messages.len(), 5);
        let shown: Vec<_> = c.visible().into_iter().map(|m| m.content).collect();
        assert_eq!(
            shown,
            [
                "Plan a day in Kyoto",
                "Start at Fushimi Inari.",
                "And lunch?",
                "Nishiki Market."
            ]
        );
        let a1 = c.visible()[1].id;
        assert_eq!(c.version_of(a1), (1, 2));
        let mut c = c.clone();
        assert!(c.switch_version(a1, 1));
        let shown: Vec<_> = c.visible().into_iter().map(|m| m.content).collect();
        assert_eq!(shown, ["Plan a day in Kyoto", "Begin with Kiyomizu-dera."]);
    }

    #[test]
    fn open_webui_oddities_lose_nothing() {
        // A parent that is not there, a loop, list content.
        let odd = r#"[{"id":"x","title":"New Chat","chat":{"history":{"messages":{
            "a":{"id":"a","parentId":"gone","role":"user","content":"orphan"},
            "b":{"id":"b","parentId":"c","role":"user","content":[{"type":"text","text":"part"}]},
            "c":{"id":"c","parentId":"b","role":"assistant","content":"loop"}}}}}]"#;
        let chats = import(odd, 5.0).unwrap();
        let c = &chats[0];
        assert_eq!(c.messages.len(), 3);
        assert_eq!(c.title, "");
        assert!(c.messages.iter().any(|m| m.content == "part"));
        assert!(c.messages.iter().all(|m| m.parent.is_none_or(|p| p < m.id)));
        let bad_role = r#"[{"id":"x","chat":{"history":{"messages":{"a":{"id":"a","role":"tool","content":""}}}}}]"#;
        assert!(matches!(
            import(bad_role, 0.0),
            Err(ImportError::BadChat { index: 1, .. })
        ));
    }

    #[test]
    fn importing_twice_adds_nothing_and_clashing_ids_get_new_ones() {
        let chat = branched();
        let existing: HashMap<_, _> = [(chat.id.clone(), chat.clone())].into();
        let (add, skipped) = merge_imported(&existing, vec![chat.clone()], || "new".into());
        assert!(add.is_empty());
        assert_eq!(skipped, 1);
        let mut other = chat.clone();
        other.messages.pop();
        let (add, skipped) = merge_imported(&existing, vec![other], || "new".into());
        assert_eq!(skipped, 0);
        assert_eq!(add[0].id, "new");
    }

    #[test]
    fn markdown_has_the_branch_on_screen_without_thinking() {
        let mut chat = branched();
        let v = chat.visible();
        chat.switch_version(v[1].id, -1);
        chat.messages[0].attachments = vec![Attachment {
            name: "a.txt".into(),
            text: "hello".into(),
        }];
        let md = export_markdown(&chat, Lang::En);
        assert_eq!(
            md,
            "# Kyoto?\n\n## You\n\nKyoto?\n\nFile `a.txt`:\n```\nhello\n```\n\n## fake:latest\n\nTemples.\n"
        );
        assert!(export_markdown(&chat, Lang::Ja).contains("## あなた"));
        assert_eq!(
            file_name("Kyoto trip: day 1!", "md"),
            "kinko-kyoto-trip-day-1.md"
        );
        assert_eq!(file_name("京都の旅", "json"), "kinko-京都の旅.json");
        assert_eq!(file_name("  ", "md"), "kinko-chat.md");
    }
}
