//! Every string of the page, in one typed table per language: a field
//! missing from either table does not compile. The language follows the
//! browser (`navigator.language`, `Accept-Language` for the first paint),
//! can be switched, is remembered, and sets `<html lang>`.

use crate::api::FinishReason;
use leptos::prelude::*;

/// A language of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// 日本語.
    Ja,
}

/// localStorage key and cookie name of the chosen language.
pub const LANG_KEY: &str = "kinko_lang";

impl Lang {
    /// Every language, in the order the picker lists them.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Ja];

    /// The BCP 47 code, for `<html lang>` and the picker.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    /// The locale dates are formatted in.
    pub fn locale(self) -> &'static str {
        match self {
            Lang::En => "en-US",
            Lang::Ja => "ja-JP",
        }
    }

    /// The language of a tag such as `ja-JP` or `en`, if the page has it.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    /// The first language of an `Accept-Language` header the page has, by
    /// the header's weights (English when none).
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',') {
            let mut fields = part.split(';');
            let Some(lang) = fields.next().and_then(Lang::from_tag) else {
                continue;
            };
            let q = fields
                .find_map(|f| f.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }

    /// The strings of this language.
    pub fn t(self) -> &'static Text {
        match self {
            Lang::En => &EN,
            Lang::Ja => &JA,
        }
    }

    /// A whole number with the locale's digit grouping: `12,345`.
    pub fn int(self, n: usize) -> String {
        group(&n.to_string())
    }

    /// A number with `decimals` digits after the point: `1,234.5`.
    pub fn dec(self, x: f64, decimals: usize) -> String {
        let text = format!("{:.*}", decimals, x.abs());
        let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
        let sign = if x < 0.0 && text.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
            "-"
        } else {
            ""
        };
        if frac.is_empty() {
            format!("{sign}{}", group(whole))
        } else {
            format!("{sign}{}.{frac}", group(whole))
        }
    }

    /// Seconds for people: `< 1 s`, `40 s`, `3 min`.
    pub fn seconds(self, secs: f64) -> String {
        let t = self.t();
        if secs < 1.0 {
            t.under_a_second.into()
        } else if secs < 90.0 {
            (t.n_seconds)(&format!("{secs:.0}"))
        } else {
            (t.n_minutes)(&format!("{:.0}", secs / 60.0))
        }
    }

    /// Why an answer ended, in words.
    pub fn finish(self, reason: FinishReason) -> &'static str {
        let t = self.t();
        match reason {
            FinishReason::Stop => t.finish_stop,
            FinishReason::Length => t.finish_length,
            FinishReason::Cancelled => t.finish_cancelled,
            FinishReason::Timeout => t.finish_timeout,
            FinishReason::Error => t.finish_error,
        }
    }
}

/// Digits grouped by three with commas (English and Japanese both).
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The page's language, shared by every component.
pub fn use_lang() -> RwSignal<Lang> {
    use_context::<RwSignal<Lang>>().unwrap_or_else(|| RwSignal::new(Lang::En))
}

/// A string of the page that follows the language: one closure type for
/// every string, so the views that show them share their code (a closure
/// per string would make a copy per string in the WASM bundle).
pub fn tr(
    lang: RwSignal<Lang>,
    pick: fn(&'static Text) -> &'static str,
) -> impl Fn() -> &'static str + Copy + Send + Sync + 'static {
    move || pick(lang.get().t())
}

/// A string with parameters.
type F1 = fn(&str) -> String;
/// A string with two parameters.
type F2 = fn(&str, &str) -> String;
/// A string with three parameters.
type F3 = fn(&str, &str, &str) -> String;

/// Every string of the page in one language; each field is named for what
/// it says, and `fn` fields take the values they show.
pub struct Text {
    /// The language's own name, for the picker.
    pub name: &'static str,
    pub language: &'static str,
    pub theme: &'static str,
    pub theme_system: &'static str,
    pub theme_light: &'static str,
    pub theme_dark: &'static str,
    pub chats: &'static str,
    pub conversations: &'static str,
    pub new_chat: &'static str,
    pub new_chat_title: &'static str,
    pub search_chats: &'static str,
    pub no_chats: &'static str,
    pub no_match: &'static str,
    pub deleted: F1,
    pub undo: &'static str,
    pub pin: &'static str,
    pub unpin: &'static str,
    pub rename: &'static str,
    pub delete: &'static str,
    pub chat_title: &'static str,
    pub untitled: &'static str,
    pub model: &'static str,
    pub loading_models: &'static str,
    pub not_installed: F1,
    /// The picker's group of models on this machine (shown with remote ones).
    pub local_models: &'static str,
    /// Tooltip of a model in the picker, before its capabilities.
    pub capabilities: &'static str,
    /// The picker's group of an upstream's models.
    pub remote_models: F1,
    /// Marks a remote model in the picker.
    pub remote: &'static str,
    pub no_models: &'static str,
    pub models_error: F1,
    pub empty_title: &'static str,
    pub empty_hint: &'static str,
    /// The empty chat's title when the model runs on an upstream.
    pub remote_title: &'static str,
    /// … and what that means, naming the upstream.
    pub remote_hint: F1,
    pub conversation: &'static str,
    pub message: &'static str,
    pub placeholder: &'static str,
    pub send: &'static str,
    pub stop: &'static str,
    pub pick_model_first: &'static str,
    pub show_earlier: F1,
    pub copy: &'static str,
    pub copied: &'static str,
    pub copy_code: &'static str,
    pub copy_answer: &'static str,
    pub copy_message: &'static str,
    pub regenerate: &'static str,
    pub regenerate_title: &'static str,
    pub edit: &'static str,
    pub edit_title: &'static str,
    pub edit_save: &'static str,
    pub edit_label: &'static str,
    pub cancel: &'static str,
    pub branch_prev: &'static str,
    pub branch_next: &'static str,
    pub version_of: F2,
    pub thinking: &'static str,
    pub thinking_live: &'static str,
    pub words: F1,
    pub stopped: &'static str,
    pub timed_out: &'static str,
    pub length_limit: F1,
    pub trimmed: F3,
    pub trimmed_for_time: F2,
    pub connection_broke: F1,
    pub http_error: F2,
    pub stats_label: &'static str,
    pub ttft: F1,
    pub tokens_per_second: F1,
    pub tokens: F1,
    pub ended: F1,
    pub finish_stop: &'static str,
    pub finish_length: &'static str,
    pub finish_cancelled: &'static str,
    pub finish_timeout: &'static str,
    pub finish_error: &'static str,
    pub under_a_second: &'static str,
    pub n_seconds: F1,
    pub n_minutes: F1,
    pub gauge_label: &'static str,
    pub gauge: F3,
    pub gauge_empty: &'static str,
    pub gauge_warn: &'static str,
    pub gauge_trimmed: &'static str,
    pub settings: &'static str,
    pub settings_title: F1,
    pub settings_note: &'static str,
    pub system_prompt: &'static str,
    pub temperature: &'static str,
    pub top_p: &'static str,
    pub top_k: &'static str,
    pub max_tokens: &'static str,
    pub context_size: &'static str,
    pub context_size_title: &'static str,
    pub from_preset: F1,
    pub from_server: F1,
    pub instead_of: F1,
    pub no_system_prompt: &'static str,
    pub invalid_number: F1,
    pub clear_settings: &'static str,
    pub close: &'static str,
    pub created: F1,
    pub ctx_default: F1,
    pub ctx_tokens: F1,
    pub ctx_cost_lower: F3,
    pub ctx_cost: F2,
    pub ctx_cost_unknown: F1,
    pub help: &'static str,
    pub shortcuts: &'static str,
    pub key_new_chat: &'static str,
    pub key_search: &'static str,
    pub key_stop: &'static str,
    pub key_edit_last: &'static str,
    pub key_send: &'static str,
    pub key_newline: &'static str,
    pub key_help: &'static str,
    pub export_chats: &'static str,
    pub export_chats_title: &'static str,
    pub export_chat: &'static str,
    pub export_json: &'static str,
    pub export_markdown: &'static str,
    pub import_chats: &'static str,
    pub import_title: &'static str,
    pub imported: F2,
    pub import_failed: F1,
    pub you: &'static str,
    pub attach: &'static str,
    pub remove_file: F1,
    pub not_text: F1,
    pub file_too_big: F2,
    pub files_too_big: F1,
    pub drop_files: &'static str,
    pub login_title: &'static str,
    pub login_needs_key: &'static str,
    pub api_key: &'static str,
    pub sign_in: &'static str,
    pub wrong_key: &'static str,
    pub locked_out: F1,
    pub storage_save: F1,
    pub storage_delete: F1,
    pub storage_read: F1,
    pub storage_unavailable: F1,
}

/// English.
pub static EN: Text = Text {
    name: "English",
    language: "Language",
    theme: "Theme",
    theme_system: "System",
    theme_light: "Light",
    theme_dark: "Dark",
    chats: "Chats",
    conversations: "Conversations",
    new_chat: "New chat",
    new_chat_title: "Start a new conversation (Ctrl+Shift+O)",
    search_chats: "Search chats",
    no_chats: "No saved chats yet.",
    no_match: "No chat matches.",
    deleted: |t| format!("Deleted “{t}”."),
    undo: "Undo",
    pin: "Pin to top",
    unpin: "Unpin",
    rename: "Rename",
    delete: "Delete",
    chat_title: "Chat title",
    untitled: "New chat",
    model: "Model",
    loading_models: "Loading models…",
    not_installed: |m| format!("{m} (not installed)"),
    local_models: "On this machine",
    capabilities: "Capabilities",
    remote_models: |u| format!("Remote · {u}"),
    remote: "remote",
    no_models: "No models installed. Run `kinko import NAME FILE.gguf` or the set-up command.",
    models_error: |e| format!("Could not list models: {e}"),
    empty_title: "A private chat that stays on this machine.",
    empty_hint: "Pick a model, type a message, press Enter.",
    remote_title: "This model runs on another machine.",
    remote_hint: |u| {
        format!("kinko sends this conversation to the upstream “{u}” that this server is set up to use.")
    },
    conversation: "Conversation",
    message: "Message",
    placeholder: "Message kinko… (Enter to send, Shift+Enter for a new line)",
    send: "Send",
    stop: "Stop",
    pick_model_first: "Pick a model first.",
    show_earlier: |n| format!("Show earlier messages ({n})"),
    copy: "Copy",
    copied: "Copied",
    copy_code: "Copy code",
    copy_answer: "Copy the answer (markdown)",
    copy_message: "Copy the message",
    regenerate: "Regenerate",
    regenerate_title: "Write a new answer (this one is kept as a version)",
    edit: "Edit",
    edit_title: "Edit and send again (the original is kept as a version)",
    edit_save: "Save & send",
    edit_label: "Edit the message",
    cancel: "Cancel",
    branch_prev: "Previous version",
    branch_next: "Next version",
    version_of: |a, b| format!("Version {a} of {b}"),
    thinking: "Thinking",
    thinking_live: "Thinking…",
    words: |n| format!(" · {n} {}", if n == "1" { "word" } else { "words" }),
    stopped: "Stopped.",
    timed_out: "Timed out.",
    length_limit: |n| format!("Stopped at the {n}-token limit."),
    trimmed: |n, prompt, window| {
        format!(
            "{n} earlier message{} left out: the model saw only the latest part of this conversation ({prompt} prompt tokens of its {window}-token window).",
            if n == "1" { " was" } else { "s were" }
        )
    },
    trimmed_for_time: |n, prompt| {
        format!(
            "{n} earlier message{} left out so the model reads this conversation within the time limit on this machine ({prompt} prompt tokens). A smaller context size answers sooner; a bigger one remembers more.",
            if n == "1" { " was" } else { "s were" }
        )
    },
    connection_broke: |e| format!("The connection broke: {e}"),
    http_error: |msg, status| format!("{msg} (HTTP {status})"),
    stats_label: "Answer statistics",
    ttft: |s| format!("{s} s to first token"),
    tokens_per_second: |r| format!("{r} tokens/s"),
    tokens: |n| format!("{n} tokens"),
    ended: |why| format!("ended: {why}"),
    finish_stop: "finished",
    finish_length: "token limit",
    finish_cancelled: "stopped",
    finish_timeout: "timed out",
    finish_error: "error",
    under_a_second: "< 1 s",
    n_seconds: |n| format!("{n} s"),
    n_minutes: |n| format!("{n} min"),
    gauge_label: "Context used",
    gauge: |used, window, pct| format!("Context {used} / {window} tokens ({pct}%)"),
    gauge_empty: "Context: nothing sent yet",
    gauge_warn: "Nearly full: earlier messages will soon be left out.",
    gauge_trimmed: "Earlier messages are being left out.",
    settings: "Settings",
    settings_title: |t| format!("Settings of “{t}”"),
    settings_note: "Empty fields use the model's preset, then the server's defaults.",
    system_prompt: "System prompt",
    temperature: "Temperature",
    top_p: "Top P",
    top_k: "Top K",
    max_tokens: "Max tokens",
    context_size: "Context size",
    context_size_title: "How much of the conversation the model reads each turn",
    from_preset: |v| format!("{v} (model preset)"),
    from_server: |v| format!("{v} (server default)"),
    instead_of: |v| format!("Set for this chat, instead of {v}"),
    no_system_prompt: "none",
    invalid_number: |f| format!("{f}: not a valid number; the field is ignored until it is."),
    clear_settings: "Clear all",
    close: "Close",
    created: |d| format!("Created {d}"),
    ctx_default: |s| format!("{s} tokens (default)"),
    ctx_tokens: |s| format!("{s} tokens"),
    ctx_cost_lower: |size, secs, longest| {
        format!(
            "Context: a full {size}-token window takes at least {secs} to read on this machine (measured so far on prompts up to {longest} tokens)"
        )
    },
    ctx_cost: |size, secs| {
        format!("Context: a full {size}-token window takes ≈ {secs} to read on this machine")
    },
    ctx_cost_unknown: |size| {
        format!("Context: {size} tokens (reading speed on this machine is measured from the first answer on)")
    },
    help: "Keyboard shortcuts (Ctrl+/)",
    shortcuts: "Keyboard shortcuts",
    key_new_chat: "New chat",
    key_search: "Search chats",
    key_stop: "Stop the answer (or close a dialog)",
    key_edit_last: "Edit your last message (in an empty message box)",
    key_send: "Send",
    key_newline: "New line",
    key_help: "Show these shortcuts",
    export_chats: "Export all",
    export_chats_title: "Download every chat as JSON (kinko's format, every branch)",
    export_chat: "Export this chat (JSON)",
    export_json: "Export JSON",
    export_markdown: "Export Markdown",
    import_chats: "Import",
    import_title: "Import chats: kinko's JSON or Open WebUI's export",
    imported: |n, skipped| {
        let base = format!("Imported {n} chat{}.", if n == "1" { "" } else { "s" });
        if skipped == "0" {
            base
        } else {
            format!("{base} {skipped} already here, skipped.")
        }
    },
    import_failed: |e| format!("This file could not be imported: {e}. Nothing was changed."),
    you: "You",
    attach: "Attach text files",
    remove_file: |n| format!("Remove {n}"),
    not_text: |n| {
        format!(
            "{n} is not a text file: only text (txt, md, source code, csv, json) can be attached."
        )
    },
    file_too_big: |n, cap| format!("{n} is too big to attach (the limit is {cap} per file)."),
    files_too_big: |cap| format!("Attachments are limited to {cap} per message."),
    drop_files: "Drop text files to attach them",
    login_title: "kinko · sign in",
    login_needs_key: "This kinko server needs its API key.",
    api_key: "API key",
    sign_in: "Sign in",
    wrong_key: "That key is not right.",
    locked_out: |m| {
        format!(
            "Too many wrong keys from this address. Try again in {m} minute{}.",
            if m == "1" { "" } else { "s" }
        )
    },
    storage_save: |e| {
        format!("This chat could not be saved in the browser ({e}). Nothing saved before is lost, and this tab keeps the chat; it is saved again with the next change. Free some disk space or delete old chats.")
    },
    storage_delete: |e| format!("The chat could not be deleted from the browser's storage ({e})."),
    storage_read: |e| format!("Saved chats could not be read ({e})."),
    storage_unavailable: |e| {
        format!("Chats cannot be saved in this browser ({e}); private windows often forbid it. This chat lasts until the tab closes.")
    },
};

/// 日本語.
pub static JA: Text = Text {
    name: "日本語",
    language: "言語",
    theme: "テーマ",
    theme_system: "システム",
    theme_light: "ライト",
    theme_dark: "ダーク",
    chats: "チャット",
    conversations: "会話の一覧",
    new_chat: "新しいチャット",
    new_chat_title: "新しい会話を始める（Ctrl+Shift+O）",
    search_chats: "チャットを検索",
    no_chats: "保存されたチャットはまだありません。",
    no_match: "一致するチャットはありません。",
    deleted: |t| format!("「{t}」を削除しました。"),
    undo: "元に戻す",
    pin: "上に固定",
    unpin: "固定を外す",
    rename: "名前を変更",
    delete: "削除",
    chat_title: "チャットのタイトル",
    untitled: "新しいチャット",
    model: "モデル",
    loading_models: "モデルを読み込み中…",
    not_installed: |m| format!("{m}（未インストール）"),
    local_models: "このマシン",
    capabilities: "機能",
    remote_models: |u| format!("リモート · {u}"),
    remote: "リモート",
    no_models: "モデルがインストールされていません。`kinko import 名前 ファイル.gguf` かセットアップ用のコマンドを実行してください。",
    models_error: |e| format!("モデルの一覧を取得できませんでした: {e}"),
    empty_title: "この機械の中だけで完結する、プライベートなチャット。",
    empty_hint: "モデルを選び、メッセージを入力して Enter を押してください。",
    remote_title: "このモデルは別のマシンで動きます。",
    remote_hint: |u| format!("この会話は、このサーバーに設定された上流「{u}」へ送られます。"),
    conversation: "会話",
    message: "メッセージ",
    placeholder: "kinko へのメッセージ…（Enter で送信、Shift+Enter で改行）",
    send: "送信",
    stop: "停止",
    pick_model_first: "先にモデルを選んでください。",
    show_earlier: |n| format!("以前のメッセージを表示（{n} 件）"),
    copy: "コピー",
    copied: "コピーしました",
    copy_code: "コードをコピー",
    copy_answer: "回答をコピー（Markdown）",
    copy_message: "メッセージをコピー",
    regenerate: "再生成",
    regenerate_title: "新しい回答を書かせる（今の回答も別バージョンとして残ります）",
    edit: "編集",
    edit_title: "編集して送り直す（元のメッセージも別バージョンとして残ります）",
    edit_save: "保存して送信",
    edit_label: "メッセージを編集",
    cancel: "キャンセル",
    branch_prev: "前のバージョン",
    branch_next: "次のバージョン",
    version_of: |a, b| format!("バージョン {a}/{b}"),
    thinking: "思考",
    thinking_live: "思考中…",
    words: |n| format!(" · {n} 語"),
    stopped: "停止しました。",
    timed_out: "時間切れになりました。",
    length_limit: |n| format!("上限の {n} トークンで止まりました。"),
    trimmed: |n, prompt, window| {
        format!(
            "以前のメッセージ {n} 件を省きました。モデルが読んだのはこの会話の最近の部分だけです（{window} トークンの枠のうちプロンプト {prompt} トークン）。"
        )
    },
    trimmed_for_time: |n, prompt| {
        format!(
            "この機械で制限時間内に読めるよう、以前のメッセージ {n} 件を省きました（プロンプト {prompt} トークン）。コンテキストを小さくすると早く答え、大きくすると多くを覚えています。"
        )
    },
    connection_broke: |e| format!("接続が切れました: {e}"),
    http_error: |msg, status| format!("{msg}（HTTP {status}）"),
    stats_label: "回答の統計",
    ttft: |s| format!("最初のトークンまで {s} 秒"),
    tokens_per_second: |r| format!("{r} トークン/秒"),
    tokens: |n| format!("{n} トークン"),
    ended: |why| format!("終了理由: {why}"),
    finish_stop: "完了",
    finish_length: "トークン上限",
    finish_cancelled: "停止",
    finish_timeout: "時間切れ",
    finish_error: "エラー",
    under_a_second: "1 秒未満",
    n_seconds: |n| format!("{n} 秒"),
    n_minutes: |n| format!("{n} 分"),
    gauge_label: "使用中のコンテキスト",
    gauge: |used, window, pct| format!("コンテキスト {used} / {window} トークン（{pct}%）"),
    gauge_empty: "コンテキスト: まだ何も送っていません",
    gauge_warn: "もうすぐいっぱいです。以前のメッセージから省かれていきます。",
    gauge_trimmed: "以前のメッセージが省かれています。",
    settings: "設定",
    settings_title: |t| format!("「{t}」の設定"),
    settings_note: "空欄はモデルのプリセット、それもなければサーバーの既定値を使います。",
    system_prompt: "システムプロンプト",
    temperature: "温度（temperature）",
    top_p: "Top P",
    top_k: "Top K",
    max_tokens: "最大トークン数",
    context_size: "コンテキストサイズ",
    context_size_title: "毎回モデルが会話をどれだけ読むか",
    from_preset: |v| format!("{v}（モデルのプリセット）"),
    from_server: |v| format!("{v}（サーバーの既定値）"),
    instead_of: |v| format!("このチャット用の値（既定は {v}）"),
    no_system_prompt: "なし",
    invalid_number: |f| format!("{f}: 数値として読めません。直すまでこの欄は使われません。"),
    clear_settings: "すべて空欄に戻す",
    close: "閉じる",
    created: |d| format!("作成: {d}"),
    ctx_default: |s| format!("{s} トークン（既定）"),
    ctx_tokens: |s| format!("{s} トークン"),
    ctx_cost_lower: |size, secs, longest| {
        format!(
            "コンテキスト: {size} トークンの枠を読み切るのに、この機械では少なくとも {secs}かかります（これまでの計測は最長 {longest} トークンのプロンプト）"
        )
    },
    ctx_cost: |size, secs| {
        format!("コンテキスト: {size} トークンの枠を読み切るのに、この機械では約 {secs}かかります")
    },
    ctx_cost_unknown: |size| {
        format!("コンテキスト: {size} トークン（この機械での読む速さは最初の回答から計測します）")
    },
    help: "キーボードショートカット（Ctrl+/）",
    shortcuts: "キーボードショートカット",
    key_new_chat: "新しいチャット",
    key_search: "チャットを検索",
    key_stop: "回答を止める（ダイアログを閉じる）",
    key_edit_last: "最後に送ったメッセージを編集（入力欄が空のとき）",
    key_send: "送信",
    key_newline: "改行",
    key_help: "このショートカット一覧を表示",
    export_chats: "すべて書き出す",
    export_chats_title: "すべてのチャットを JSON でダウンロード（kinko の形式、全バージョン入り）",
    export_chat: "このチャットを書き出す（JSON）",
    export_json: "JSON で書き出す",
    export_markdown: "Markdown で書き出す",
    import_chats: "読み込む",
    import_title: "チャットを読み込む: kinko の JSON か Open WebUI の書き出しファイル",
    imported: |n, skipped| {
        if skipped == "0" {
            format!("{n} 件のチャットを読み込みました。")
        } else {
            format!("{n} 件のチャットを読み込みました。{skipped} 件はすでにあるため飛ばしました。")
        }
    },
    import_failed: |e| format!("このファイルは読み込めませんでした: {e}。何も変更していません。"),
    you: "あなた",
    attach: "テキストファイルを添付",
    remove_file: |n| format!("{n} を外す"),
    not_text: |n| {
        format!("{n} はテキストファイルではありません。添付できるのはテキスト（txt、md、ソースコード、csv、json）だけです。")
    },
    file_too_big: |n, cap| format!("{n} は大きすぎて添付できません（1 ファイル {cap} まで）。"),
    files_too_big: |cap| format!("添付は 1 メッセージにつき合計 {cap} までです。"),
    drop_files: "ここにテキストファイルをドロップして添付",
    login_title: "kinko · サインイン",
    login_needs_key: "この kinko サーバーを使うには API キーが必要です。",
    api_key: "API キー",
    sign_in: "サインイン",
    wrong_key: "キーが正しくありません。",
    locked_out: |m| format!("このアドレスから間違ったキーが続きました。{m} 分後にもう一度お試しください。"),
    storage_save: |e| {
        format!("このチャットをブラウザに保存できませんでした（{e}）。保存済みのものは失われず、このタブにはチャットが残っています。次の変更のときにもう一度保存します。ディスクの空きを増やすか、古いチャットを削除してください。")
    },
    storage_delete: |e| format!("チャットをブラウザの保存領域から削除できませんでした（{e}）。"),
    storage_read: |e| format!("保存されたチャットを読み込めませんでした（{e}）。"),
    storage_unavailable: |e| {
        format!("このブラウザではチャットを保存できません（{e}）。プライベートウィンドウでは禁止されていることがよくあります。このチャットはタブを閉じるまで残ります。")
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_the_browser() {
        assert_eq!(Lang::from_tag("ja-JP"), Some(Lang::Ja));
        assert_eq!(Lang::from_tag("EN_gb"), Some(Lang::En));
        assert_eq!(Lang::from_tag("fr"), None);
        assert_eq!(
            Lang::from_accept_language("fr-FR,ja;q=0.8,en;q=0.5"),
            Lang::Ja
        );
        assert_eq!(Lang::from_accept_language("en-US,ja;q=0.9"), Lang::En);
        assert_eq!(Lang::from_accept_language("de"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    #[test]
    fn numbers_are_grouped_for_the_locale() {
        for lang in Lang::ALL {
            assert_eq!(lang.int(0), "0");
            assert_eq!(lang.int(999), "999");
            assert_eq!(lang.int(1000), "1,000");
            assert_eq!(lang.int(1234567), "1,234,567");
            assert_eq!(lang.dec(1234.56, 1), "1,234.6");
            assert_eq!(lang.dec(0.4249, 2), "0.42");
            assert_eq!(lang.dec(-0.001, 1), "0.0");
        }
    }

    #[test]
    fn both_tables_say_the_same_things() {
        assert_eq!(Lang::En.seconds(0.4), "< 1 s");
        assert_eq!(Lang::Ja.seconds(38.2), "38 秒");
        assert_eq!(Lang::Ja.seconds(447.0), "7 分");
        assert_eq!((EN.trimmed)("1", "10", "20").matches(" was ").count(), 1);
        assert_eq!((EN.imported)("1", "0"), "Imported 1 chat.");
        assert_eq!(
            (EN.imported)("3", "2"),
            "Imported 3 chats. 2 already here, skipped."
        );
        assert!((JA.imported)("3", "2").contains("2 件"));
        for reason in FinishReason::ALL {
            assert!(!Lang::En.finish(reason).is_empty());
            assert!(!Lang::Ja.finish(reason).is_empty());
            assert_ne!(Lang::En.finish(reason), Lang::Ja.finish(reason));
        }
    }
}
