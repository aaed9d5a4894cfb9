//! The composer: the message box (Enter sends, Shift+Enter is a new line,
//! Enter that confirms an IME composition never sends, in Chromium's and
//! WebKit's event orders), text files attached by button, drag-and-drop or
//! paste (inlined with their names when sent, within a size cap; binaries
//! refused), and Send or Stop.

use crate::chats::Attachment;
use crate::i18n::{tr, use_lang, Lang};
use leptos::prelude::*;

/// The largest file that can be attached.
pub const FILE_CAP: usize = 256 * 1024;
/// The most attached text one message may carry.
pub const MESSAGE_CAP: usize = 1024 * 1024;
/// How soon after `compositionend` an Enter is taken as the one that
/// confirmed the composition (WebKit sends it after the composition ended).
pub const COMPOSITION_GRACE_MS: f64 = 100.0;

/// Why a file was not attached.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Not text (not UTF-8, or has NUL bytes).
    NotText(String),
    /// Bigger than [`FILE_CAP`].
    TooBig(String),
    /// The message's attachments would pass [`MESSAGE_CAP`].
    TooMuch,
}

impl Refusal {
    /// What to tell the person.
    pub fn message(&self, lang: Lang) -> String {
        let t = lang.t();
        match self {
            Refusal::NotText(name) => (t.not_text)(name),
            Refusal::TooBig(name) => (t.file_too_big)(name, &crate::human_size_kb(FILE_CAP)),
            Refusal::TooMuch => (t.files_too_big)(&crate::human_size_kb(MESSAGE_CAP)),
        }
    }
}

/// Check one file for attaching beside `already` bytes of attachments.
pub fn check_file(name: &str, bytes: &[u8], already: usize) -> Result<Attachment, Refusal> {
    if bytes.len() > FILE_CAP {
        return Err(Refusal::TooBig(name.into()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Refusal::NotText(name.into()))?;
    if text.contains('\0') {
        return Err(Refusal::NotText(name.into()));
    }
    if already + bytes.len() > MESSAGE_CAP {
        return Err(Refusal::TooMuch);
    }
    Ok(Attachment {
        name: name.into(),
        text: text.trim_start_matches('\u{feff}').to_string(),
    })
}

/// Whether a keydown sends the message: Enter without Shift, unless it
/// confirms an IME composition. Chromium marks that Enter `isComposing`
/// (keyCode 229) before `compositionend`; WebKit sends it after
/// `compositionend`, with `isComposing` false and keyCode 229. An Enter
/// right after `compositionend` is taken as the confirming one too.
pub fn enter_sends(
    key: &str,
    shift: bool,
    is_composing: bool,
    key_code: u32,
    ms_since_composition_end: Option<f64>,
) -> bool {
    key == "Enter"
        && !shift
        && !is_composing
        && key_code != 229
        && ms_since_composition_end.is_none_or(|ms| !(0.0..COMPOSITION_GRACE_MS).contains(&ms))
}

/// What the composer needs from the page.
#[derive(Clone, Copy)]
pub struct ComposerParts {
    /// The message being typed.
    pub input: RwSignal<String>,
    /// The files attached to it.
    pub files: RwSignal<Vec<Attachment>>,
    /// An answer is streaming (Stop instead of Send).
    pub streaming: Signal<bool>,
    /// Send the message.
    pub send: Callback<()>,
    /// Stop the answer.
    pub stop: Callback<()>,
    /// ↑ in an empty box: edit the last message.
    pub edit_last: Callback<()>,
    /// Tell the person something (a refused file).
    pub notice: RwSignal<Option<String>>,
}

/// The composer.
#[component]
pub fn Composer(parts: ComposerParts) -> impl IntoView {
    let lang = use_lang();
    let ComposerParts {
        input,
        files,
        streaming,
        send,
        stop,
        edit_last,
        notice,
    } = parts;
    // When the last composition ended (event time), for WebKit's order.
    let composition_end = StoredValue::new(None::<f64>);
    let dragging = RwSignal::new(false);
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        let since = composition_end.get_value().map(|t| ev.time_stamp() - t);
        if ev.key() == "Enter" {
            composition_end.set_value(None);
        }
        if enter_sends(
            &ev.key(),
            ev.shift_key(),
            ev.is_composing(),
            ev.key_code(),
            since,
        ) {
            ev.prevent_default();
            send.run(());
        } else if ev.key() == "ArrowUp"
            && !ev.is_composing()
            && input.with_untracked(String::is_empty)
            && files.with_untracked(Vec::is_empty)
        {
            ev.prevent_default();
            edit_last.run(());
        }
    };
    let _ = (notice, dragging);
    let can_send = move || input.with(|t| !t.trim().is_empty()) || files.with(|f| !f.is_empty());
    view! {
        <form class="composer" class:dragging=move || dragging.get()
            on:submit=move |ev| { ev.prevent_default(); send.run(()); }
            on:dragover=move |ev: leptos::ev::DragEvent| { ev.prevent_default(); dragging.set(true); }
            on:dragleave=move |_| dragging.set(false)
            on:drop=move |ev: leptos::ev::DragEvent| {
                ev.prevent_default();
                dragging.set(false);
                #[cfg(feature = "hydrate")]
                if let Some(list) = ev.data_transfer().and_then(|d| d.files()) {
                    add_files(list, files, notice, lang.get_untracked());
                }
            }>
            {move || (!files.with(Vec::is_empty)).then(|| view! {
                <ul class="attachments" data-testid="attachments" aria-label=tr(lang, |t| t.attach)>
                    <For each=move || files.get() key=|f| f.name.clone() let:file>
                        {
                            let name = file.name.clone();
                            let remove = file.name.clone();
                            view! {
                                <li class="attachment" data-testid="attachment">
                                    <span class="attachment-name" title=name.clone()>{name.clone()}</span>
                                    <button type="button" class="icon remove-file"
                                        aria-label=move || (lang.get().t().remove_file)(&name)
                                        on:click=move |_| files.update(|f| f.retain(|a| a.name != remove))>"✕"</button>
                                </li>
                            }
                        }
                    </For>
                </ul>
            })}
            <div class="composer-row">
                <label class="attach-button icon" title=tr(lang, |t| t.attach)>
                    <span class="visually-hidden">{tr(lang, |t| t.attach)}</span>
                    <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
                        <path d="M21 11l-8.5 8.5a5 5 0 0 1-7-7L14 4a3.5 3.5 0 0 1 5 5l-8.5 8.5a2 2 0 0 1-3-3L15 7" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"></path>
                    </svg>
                    <input type="file" multiple data-testid="attach" class="file-input"
                        on:change=move |ev| {
                            #[cfg(feature = "hydrate")]
                            {
                                use wasm_bindgen::JsCast;
                                if let Some(el) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) {
                                    if let Some(list) = el.files() {
                                        add_files(list, files, notice, lang.get_untracked());
                                    }
                                    el.set_value("");
                                }
                            }
                            #[cfg(not(feature = "hydrate"))]
                            let _ = ev;
                        }/>
                </label>
                <textarea
                    data-testid="composer"
                    rows="2"
                    aria-label=tr(lang, |t| t.message)
                    placeholder=tr(lang, |t| t.placeholder)
                    prop:value=move || input.get()
                    on:input=move |ev| input.set(event_target_value(&ev))
                    on:keydown=on_keydown
                    on:compositionend=move |ev: leptos::ev::CompositionEvent| composition_end.set_value(Some(ev.time_stamp()))
                    on:paste=move |ev: leptos::ev::ClipboardEvent| {
                        #[cfg(feature = "hydrate")]
                        if let Some(list) = ev.clipboard_data().and_then(|d| d.files()).filter(|l| l.length() > 0) {
                            ev.prevent_default();
                            add_files(list, files, notice, lang.get_untracked());
                        }
                        #[cfg(not(feature = "hydrate"))]
                        let _ = ev;
                    }
                ></textarea>
                <Show
                    when=move || streaming.get()
                    fallback=move || view! {
                        <button type="submit" class="send" data-testid="send"
                            disabled=move || !can_send()>{tr(lang, |t| t.send)}</button>
                    }
                >
                    <button type="button" class="stop" data-testid="stop" on:click=move |_| stop.run(())>{tr(lang, |t| t.stop)}</button>
                </Show>
            </div>
        </form>
    }
}

/// Read the files and attach the text ones; tell why any other is refused.
#[cfg(feature = "hydrate")]
fn add_files(
    list: web_sys::FileList,
    files: RwSignal<Vec<Attachment>>,
    notice: RwSignal<Option<String>>,
    lang: Lang,
) {
    let picked: Vec<web_sys::File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
    leptos::task::spawn_local(async move {
        let mut refusals = Vec::new();
        for file in picked {
            let name = file.name();
            let bytes = crate::client::file_bytes(&file, FILE_CAP).await;
            // A file of the same name is replaced, so it does not count.
            let already: usize = files.with_untracked(|f| {
                f.iter()
                    .filter(|a| a.name != name)
                    .map(|a| a.text.len())
                    .sum()
            });
            let checked = match bytes {
                Some(bytes) => check_file(&name, &bytes, already),
                None => Err(Refusal::TooBig(name.clone())),
            };
            match checked {
                Ok(a) => files.update(|f| {
                    f.retain(|x| x.name != a.name);
                    f.push(a);
                }),
                Err(r) => refusals.push(r.message(lang)),
            }
        }
        notice.set((!refusals.is_empty()).then(|| refusals.join(" ")));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_files_attach_and_binaries_do_not() {
        let a = check_file("notes.md", "\u{feff}# Title\n".as_bytes(), 0).unwrap();
        assert_eq!(a.text, "# Title\n");
        assert_eq!(
            check_file("logo.png", &[0x89, b'P', b'N', b'G', 0, 0xff], 0),
            Err(Refusal::NotText("logo.png".into()))
        );
        assert_eq!(
            check_file("nul.txt", b"a\0b", 0),
            Err(Refusal::NotText("nul.txt".into()))
        );
        let big = vec![b'a'; FILE_CAP + 1];
        assert_eq!(
            check_file("big.txt", &big, 0),
            Err(Refusal::TooBig("big.txt".into()))
        );
        assert_eq!(
            check_file("one-more.txt", b"abc", MESSAGE_CAP - 2),
            Err(Refusal::TooMuch)
        );
        assert!(Refusal::NotText("x.bin".into())
            .message(Lang::Ja)
            .contains("x.bin"));
    }

    #[test]
    fn enter_that_confirms_a_composition_never_sends() {
        // Plain Enter sends; Shift+Enter does not.
        assert!(enter_sends("Enter", false, false, 13, None));
        assert!(!enter_sends("Enter", true, false, 13, None));
        // Chromium: the confirming Enter comes while composing (229).
        assert!(!enter_sends("Enter", false, true, 229, None));
        // WebKit: it comes after compositionend, not composing, keyCode 229…
        assert!(!enter_sends("Enter", false, false, 229, Some(3.0)));
        // …or, in some versions, keyCode 13 right after compositionend.
        assert!(!enter_sends("Enter", false, false, 13, Some(3.0)));
        // A later Enter sends.
        assert!(enter_sends("Enter", false, false, 13, Some(800.0)));
        assert!(!enter_sends("a", false, false, 65, None));
    }
}
