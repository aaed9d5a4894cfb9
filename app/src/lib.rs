//! kinko's user interface: one chat page, rendered on the server and
//! hydrated in the browser. Conversations live in the browser (IndexedDB);
//! the open one is sent whole each turn and its answer streams in as SSE.

/// The wire types (shared with the server; they live in `kinko-parse`).
pub use kinko_parse::api;
pub mod chats;
#[cfg(feature = "hydrate")]
mod client;
pub mod context_size;
pub mod highlight;
pub mod markdown;
mod message;
pub mod page;
mod sidebar;
#[cfg(feature = "hydrate")]
mod store;

use leptos::prelude::*;
use page::ChatPage;

/// The HTML document around the app (server side).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
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
/// path is a static file or the server's not-found page).
#[component]
pub fn App() -> impl IntoView {
    view! { <ChatPage/> }
}

pub use page::human_size;
