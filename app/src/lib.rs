//! kinko's user interface: one chat page, rendered on the server and
//! hydrated in the browser. Conversations live in the browser (IndexedDB);
//! the open one is sent whole each turn and its answer streams in as SSE.

/// The wire types (shared with the server; they live in `kinko-parse`).
pub use kinko_parse::api;
pub mod attach;
pub mod chats;
#[cfg(feature = "hydrate")]
mod client;
pub mod context_size;
pub mod export;
pub mod highlight;
pub mod i18n;
pub mod markdown;
mod message;
pub mod page;
pub mod prefs;
pub mod settings;
mod sidebar;
#[cfg(feature = "hydrate")]
mod store;

use i18n::Lang;
use leptos::prelude::*;
use page::ChatPage;
use prefs::Theme;

/// The HTML document around the app (server side), in the language and
/// theme the request asks for (see [`prefs::from_request`]).
pub fn shell(options: LeptosOptions, lang: Lang, theme: Theme) -> impl IntoView {
    provide_context(RwSignal::new(lang));
    provide_context(RwSignal::new(theme));
    let data_theme = (theme != Theme::System).then(|| theme.code());
    view! {
        <!DOCTYPE html>
        <html lang=lang.code() data-theme=data_theme>
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <title>"kinko"</title>
                <link rel="stylesheet" href="/pkg/kinko.css"/>
                <HydrationScripts options/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application root: the one page, at `/` (no router: every other
/// path is a static file or the server's not-found page). It owns the
/// language and the theme: on the server they come from the shell; in the
/// browser from what the server rendered, then from what was chosen before
/// (localStorage) or, for the language, from `navigator.language`.
#[component]
pub fn App() -> impl IntoView {
    let lang = use_context::<RwSignal<Lang>>().unwrap_or_else(|| {
        let signal = RwSignal::new(Lang::En);
        provide_context(signal);
        signal
    });
    let theme = use_context::<RwSignal<Theme>>().unwrap_or_else(|| {
        let signal = RwSignal::new(Theme::System);
        provide_context(signal);
        signal
    });
    #[cfg(feature = "hydrate")]
    {
        if let Some(l) = client::html_attribute("lang").and_then(|l| Lang::from_tag(&l)) {
            lang.set(l);
        }
        if let Some(t) = client::html_attribute("data-theme").and_then(|t| Theme::from_code(&t)) {
            theme.set(t);
        }
        // After hydration: the remembered choice, else the browser's.
        Effect::new(move |first: Option<()>| {
            if first.is_none() {
                // The choice made here before (localStorage, else the
                // cookie the server rendered with), else the browser's.
                let chosen = client::local_item(i18n::LANG_KEY)
                    .or_else(|| client::cookie(i18n::LANG_KEY))
                    .or_else(client::browser_language)
                    .and_then(|t| Lang::from_tag(&t));
                if let Some(l) = chosen {
                    lang.set(l);
                }
                if let Some(t) =
                    client::local_item(prefs::THEME_KEY).and_then(|t| Theme::from_code(&t))
                {
                    theme.set(t);
                }
            }
        });
        Effect::new(move |_| {
            let l = lang.get();
            client::set_html_attribute("lang", Some(l.code()));
            markdown::set_copy_labels(l.t().copy, l.t().copy_code);
        });
        Effect::new(move |_| {
            let t = theme.get();
            client::set_html_attribute("data-theme", (t != Theme::System).then(|| t.code()));
        });
    }
    let _ = (lang, theme);
    view! { <ChatPage/> }
}

pub use page::human_size;

/// A size limit for people: `256 KB`, `1 MB` (binary units).
pub fn human_size_kb(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MB", bytes >> 20)
    } else {
        format!("{} KB", bytes.div_ceil(1024))
    }
}
