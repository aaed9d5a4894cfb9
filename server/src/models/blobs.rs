//! Blobs: model files a client uploads before `/api/create` names them
//! (`HEAD`/`POST /api/blobs/sha256:…`, as Ollama's CLI and Open WebUI do
//! from another machine). They live in `$KINKO_HOME/blobs`, one file per
//! digest, written under a temporary name while the body streams in and
//! renamed into place only once its digest matched and kinko's GGUF
//! validator passed it. A model made from a blob hard-links it, so keeping
//! the blob costs no space; blobs no model links any more go at the next
//! start.

use super::{gguf, io, parse_digest, ModelStore, StoreError};
use axum::body::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// The directory under `$KINKO_HOME` that holds blobs.
pub const BLOBS_DIR: &str = "blobs";

/// Temporary uploads are named `.upload-<hex>-<pid>-<n>`.
const UPLOAD_PREFIX: &str = ".upload-";

/// A blob no model links is kept this long after its upload, for the
/// `/api/create` that should follow it.
const UNUSED_BLOB_GRACE: Duration = Duration::from_secs(3600);

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The digest in the path is not `sha256:` and 64 hex digits.
    #[error(transparent)]
    Digest(StoreError),
    /// What arrived does not have the digest it was sent under.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Mismatch {
        /// The digest in the path.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// More bytes than the server takes.
    #[error("the upload is larger than the limit ({0} bytes)")]
    TooLarge(u64),
    /// What arrived is not a GGUF model kinko can read.
    #[error("the uploaded file is not a usable GGUF model: {0}")]
    NotAModel(String),
    /// The client stopped sending before the end.
    #[error("the upload broke off: {0}")]
    BrokeOff(String),
    /// The disk said no.
    #[error(transparent)]
    Store(StoreError),
}

impl ModelStore {
    /// The directory holding uploaded blobs.
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.parent().unwrap_or(&self.root).join(BLOBS_DIR)
    }

    /// Where the blob `digest` lives (whether or not it is there); an
    /// invalid digest never names a path.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let digest = parse_digest(digest)?;
        Ok(self.blobs_dir().join(digest.replace(':', "-")))
    }

    /// The blob `digest`, if it has been uploaded (a regular file only).
    pub fn blob(&self, digest: &str) -> Result<Option<PathBuf>, StoreError> {
        let path = self.blob_path(digest)?;
        let there = fs::symlink_metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false);
        Ok(there.then_some(path))
    }

    /// Whether `path` is a blob of this store (so its file never changes
    /// and a model may hard-link it).
    pub(crate) fn is_blob(&self, path: &Path) -> bool {
        path.parent() == Some(self.blobs_dir().as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sha256-"))
    }

    /// Remove uploads of processes that died mid-way, and blobs no model
    /// links that are older than an hour. Answers what it removed.
    pub(crate) fn recover_blobs(&self) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let mut done = Vec::new();
        let Ok(entries) = fs::read_dir(self.blobs_dir()) else {
            return done;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().to_string();
            let remove = if let Some(rest) = name.strip_prefix(UPLOAD_PREFIX) {
                let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
                pid.is_none_or(|pid| !super::process_alive(pid) || pid == std::process::id())
            } else {
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|age| age > UNUSED_BLOB_GRACE);
                meta.is_file() && meta.nlink() == 1 && old
            };
            if remove && fs::remove_file(&path).is_ok() {
                done.push(format!("removed {}", path.display()));
            }
        }
        done
    }
}

/// Removes the temporary upload unless it was renamed into place.
struct PartialUpload(Option<PathBuf>);

impl Drop for PartialUpload {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Receive the blob `digest` from `body`: streamed to a temporary file
/// while hashed, at most `max_bytes`, then checked (digest, GGUF validator)
/// and renamed into place. `Ok(true)` when it was written, `Ok(false)` when
/// it was already there (the body is not read). Nothing is left behind on
/// failure, nor when the client hangs up and this future is dropped.
pub async fn receive<S, E>(
    store: &ModelStore,
    digest: &str,
    body: S,
    max_bytes: u64,
) -> Result<bool, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    static UPLOADS: AtomicU64 = AtomicU64::new(0);
    let digest = parse_digest(digest).map_err(BlobError::Digest)?;
    if store.blob(&digest).map_err(BlobError::Digest)?.is_some() {
        return Ok(false);
    }
    let dir = store.blobs_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| BlobError::Store(io(format!("create {}", dir.display()))(e)))?;
    let hex = &digest["sha256:".len()..];
    let tmp = dir.join(format!(
        "{UPLOAD_PREFIX}{hex}-{}-{}",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut guard = PartialUpload(Some(tmp.clone()));
    let write_err = |e: std::io::Error| BlobError::Store(io(format!("write {}", tmp.display()))(e));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BlobError::BrokeOff(e.to_string()))?;
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(BlobError::TooLarge(max_bytes));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write_err)?;
    }
    file.sync_all().await.map_err(write_err)?;
    drop(file);
    let actual = format!("sha256:{}", super::hex(&hasher.finalize()));
    if actual != digest {
        return Err(BlobError::Mismatch {
            expected: digest,
            actual,
        });
    }
    let checked = tmp.clone();
    let info = tokio::task::spawn_blocking(move || gguf::inspect(&checked))
        .await
        .map_err(|e| BlobError::NotAModel(format!("the check failed: {e}")))?;
    if let Err(err) = info {
        return Err(BlobError::NotAModel(match err {
            StoreError::NotGguf { reason, .. } => reason,
            _ => "it is not a GGUF file".into(),
        }));
    }
    let path = store.blob_path(&digest).map_err(BlobError::Digest)?;
    fs::rename(&tmp, &path).map_err(|e| BlobError::Store(io("store the blob")(e)))?;
    guard.0 = None;
    tracing::info!(%digest, size, "blob received");
    Ok(true)
}
