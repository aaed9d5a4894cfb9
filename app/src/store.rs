//! Browser-only (compiled with `hydrate`): the conversations in IndexedDB,
//! one record per chat (the chat's JSON under its id), so a write touches
//! only the chat that changed; the BroadcastChannel that tells other open
//! tabs which chat changed; and the one-time copy of the localStorage
//! conversation of earlier versions.

use crate::chats::{Chat, SavedChat, LEGACY_CHAT_ID, LEGACY_KEY, LEGACY_MIGRATED_KEY};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbRequest, IdbTransaction, IdbTransactionMode};

const DB_NAME: &str = "kinko";
const DB_VERSION: u32 = 1;
const STORE: &str = "chats";
/// The channel open tabs tell each other about changes on.
pub const CHANNEL: &str = "kinko.chats";

/// The open database.
#[derive(Clone)]
pub struct Db(IdbDatabase);

/// A readable message from a failed IndexedDB call (a `DOMException`'s
/// name and message).
fn describe(e: JsValue) -> String {
    if let Some(ex) = e.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", ex.name(), ex.message());
    }
    if let Some(req) = e
        .dyn_ref::<web_sys::Event>()
        .and_then(|ev| ev.target())
        .and_then(|t| t.dyn_into::<IdbRequest>().ok())
    {
        if let Ok(Some(ex)) = req.error() {
            return format!("{}: {}", ex.name(), ex.message());
        }
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// Wait for a request's `success` (its result) or `error`.
async fn done(request: &IdbRequest) -> Result<JsValue, String> {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(promise).await.map_err(describe)?;
    request.result().map_err(describe)
}

/// Wait until a transaction committed; an abort or error is an `Err`.
async fn committed(tx: &IdbTransaction) -> Result<(), String> {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        tx.set_oncomplete(Some(&resolve));
        tx.set_onerror(Some(&reject));
        tx.set_onabort(Some(&reject));
    });
    JsFuture::from(promise).await.map(|_| ()).map_err(|e| {
        tx.error()
            .map(|ex| format!("{}: {}", ex.name(), ex.message()))
            .unwrap_or_else(|| describe(e))
    })
}

/// Open (and on first use create) the database.
pub async fn open() -> Result<Db, String> {
    let factory = web_sys::window()
        .ok_or("no window")?
        .indexed_db()
        .map_err(describe)?
        .ok_or("IndexedDB is not available")?;
    let request = factory
        .open_with_u32(DB_NAME, DB_VERSION)
        .map_err(describe)?;
    let upgrade = Closure::<dyn Fn(web_sys::Event)>::new(move |ev: web_sys::Event| {
        let db = ev
            .target()
            .and_then(|t| t.dyn_into::<IdbRequest>().ok())
            .and_then(|r| r.result().ok())
            .and_then(|r| r.dyn_into::<IdbDatabase>().ok());
        if let Some(db) = db {
            if !db.object_store_names().contains(STORE) {
                let _ = db.create_object_store(STORE);
            }
        }
    });
    request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let db = done(&request).await;
    request.set_onupgradeneeded(None);
    drop(upgrade);
    db?.dyn_into::<IdbDatabase>()
        .map(Db)
        .map_err(|_| "IndexedDB gave no database".into())
}

/// A stored record as a chat of this format (a format-1 record becomes one
/// branch; nothing in it is dropped).
fn parse(value: JsValue) -> Option<Chat> {
    let mut chat: Chat = serde_json::from_str(&value.as_string()?).ok()?;
    chat.normalize();
    Some(chat)
}

impl Db {
    fn store(
        &self,
        mode: IdbTransactionMode,
    ) -> Result<(IdbTransaction, web_sys::IdbObjectStore), String> {
        let tx = self
            .0
            .transaction_with_str_and_mode(STORE, mode)
            .map_err(describe)?;
        let store = tx.object_store(STORE).map_err(describe)?;
        Ok((tx, store))
    }

    /// Every stored chat. A record that does not parse is left untouched
    /// in the database (never rewritten, never deleted).
    pub async fn all(&self) -> Result<Vec<Chat>, String> {
        let (_tx, store) = self.store(IdbTransactionMode::Readonly)?;
        let values = done(&store.get_all().map_err(describe)?).await?;
        Ok(js_sys::Array::from(&values)
            .iter()
            .filter_map(parse)
            .collect())
    }

    /// One chat, if stored.
    pub async fn get(&self, id: &str) -> Result<Option<Chat>, String> {
        let (_tx, store) = self.store(IdbTransactionMode::Readonly)?;
        let value = done(&store.get(&JsValue::from_str(id)).map_err(describe)?).await?;
        Ok(parse(value))
    }

    /// Write one chat; `Ok` only once the transaction committed.
    pub async fn put(&self, chat: &Chat) -> Result<(), String> {
        let json = serde_json::to_string(chat).map_err(|e| e.to_string())?;
        let (tx, store) = self.store(IdbTransactionMode::Readwrite)?;
        store
            .put_with_key(&JsValue::from_str(&json), &JsValue::from_str(&chat.id))
            .map_err(describe)?;
        committed(&tx).await
    }

    /// Delete one chat; `Ok` once the transaction committed.
    pub async fn delete(&self, id: &str) -> Result<(), String> {
        let (tx, store) = self.store(IdbTransactionMode::Readwrite)?;
        store.delete(&JsValue::from_str(id)).map_err(describe)?;
        committed(&tx).await
    }

    /// Copy the earlier versions' localStorage conversation into the
    /// database, once. The old key stays where it was; a marker beside it
    /// says the copy was made. An existing copy is never overwritten (it may
    /// have been continued since). Returns whether a chat was added.
    pub async fn migrate_legacy(&self, now: f64) -> Result<bool, String> {
        let Some(storage) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) else {
            return Ok(false);
        };
        if storage
            .get_item(LEGACY_MIGRATED_KEY)
            .ok()
            .flatten()
            .is_some()
        {
            return Ok(false);
        }
        let Some(old) = storage.get_item(LEGACY_KEY).ok().flatten() else {
            return Ok(false);
        };
        let saved: SavedChat = serde_json::from_str(&old).map_err(|e| {
            format!("the conversation saved by an earlier version could not be read ({e}); it is kept as it was under {LEGACY_KEY}")
        })?;
        let mut added = false;
        if !saved.messages.is_empty() && self.get(LEGACY_CHAT_ID).await?.is_none() {
            self.put(&Chat::from_legacy(saved, now)).await?;
            added = true;
        }
        let _ = storage.set_item(LEGACY_MIGRATED_KEY, LEGACY_CHAT_ID);
        Ok(added)
    }
}

/// What one tab tells the others.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    /// This chat was written.
    Put {
        /// Its id.
        id: String,
    },
    /// This chat was deleted.
    Delete {
        /// Its id.
        id: String,
    },
}

/// The channel to the other tabs.
pub struct Channel(Option<web_sys::BroadcastChannel>);

impl Channel {
    /// Open the channel; `on_change` hears the other tabs.
    pub fn open(on_change: impl Fn(Change) + 'static) -> Self {
        let Ok(channel) = web_sys::BroadcastChannel::new(CHANNEL) else {
            return Self(None);
        };
        let handler =
            Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
                if let Some(change) = ev
                    .data()
                    .as_string()
                    .and_then(|t| serde_json::from_str::<Change>(&t).ok())
                {
                    on_change(change);
                }
            });
        channel.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        // The page lives as long as the channel: the handler stays.
        handler.forget();
        Self(Some(channel))
    }

    /// Tell the other tabs.
    pub fn post(&self, change: &Change) {
        if let (Some(channel), Ok(text)) = (&self.0, serde_json::to_string(change)) {
            let _ = channel.post_message(&JsValue::from_str(&text));
        }
    }
}

thread_local! {
    static DB: std::cell::RefCell<Option<Db>> = const { std::cell::RefCell::new(None) };
    static TABS: std::cell::RefCell<Option<Channel>> = const { std::cell::RefCell::new(None) };
}

/// The page's database, once open.
pub fn db() -> Option<Db> {
    DB.with(|d| d.borrow().clone())
}

/// Keep the opened database for the page.
pub fn set_db(db: Db) {
    DB.with(|d| *d.borrow_mut() = Some(db));
}

/// Hear the other tabs.
pub fn listen(on_change: impl Fn(Change) + 'static) {
    TABS.with(|t| *t.borrow_mut() = Some(Channel::open(on_change)));
}

/// Tell the other tabs.
pub fn post(change: &Change) {
    TABS.with(|t| {
        if let Some(channel) = t.borrow().as_ref() {
            channel.post(change);
        }
    });
}
