//! Downloading a GGUF file into the store (`kinko pull`, `POST /api/pull`):
//! from a Hugging Face style name (`hf.co/ORG/REPO:FILE`) or a plain URL,
//! with progress, resume (an interrupted download continues from where it
//! stopped, with an HTTP Range request) and a SHA-256 check.

use super::{normalize_name, quantize, ImportOutcome, ModelStore, StoreError};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// What to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSpec {
    /// The file's URL.
    pub url: String,
    /// The store name it gets.
    pub name: String,
    /// The SHA-256 it must have (hex), if known in advance.
    pub sha256: Option<String>,
}

/// Progress of a pull.
#[derive(Debug, Clone, PartialEq)]
pub enum PullEvent {
    /// Bytes so far, of the total when known.
    Progress {
        /// Bytes on disk.
        completed: u64,
        /// Expected size.
        total: Option<u64>,
    },
    /// Checking the digest.
    Verifying,
    /// Writing the model into the store.
    Installing,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The name could not be understood.
    #[error("{0}")]
    BadSpec(String),
    /// The server said no, or the connection failed.
    #[error("download failed: {0}")]
    Http(String),
    /// The file is not what it should be.
    #[error("digest mismatch: expected sha256:{expected}, got sha256:{actual}")]
    Digest {
        /// What it should be.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// What arrived is not a GGUF model kinko can take.
    #[error("the downloaded file is not a usable GGUF model: {0}")]
    NotAModel(String),
    /// Storing it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn sanitize(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.starts_with('.') || out.starts_with('-') {
        out.remove(0);
    }
    out.truncate(64);
    out
}

/// Parse `hf.co/ORG/REPO:FILE`, `huggingface.co/…` or an http(s) URL, each
/// optionally ending in `@sha256:<hex>`. `name` overrides the store name.
pub fn parse_spec(
    spec: &str,
    name: Option<&str>,
    hf_endpoint: &str,
) -> Result<PullSpec, PullError> {
    let (body, sha256) = match spec.rsplit_once('@') {
        Some((b, d)) if d.starts_with("sha256:") => {
            let digest = super::parse_digest(d)?;
            (b, digest.strip_prefix("sha256:").map(str::to_string))
        }
        _ => (spec, None),
    };
    let (url, default_name) = if let Some(rest) = body
        .strip_prefix("hf.co/")
        .or_else(|| body.strip_prefix("huggingface.co/"))
    {
        let (repo, file) = rest
            .split_once(':')
            .ok_or_else(|| PullError::BadSpec(format!("`{spec}`: use hf.co/ORG/REPO:FILE.gguf")))?;
        if repo.split('/').count() != 2 || !file.ends_with(".gguf") {
            return Err(PullError::BadSpec(format!(
                "`{spec}`: use hf.co/ORG/REPO:FILE.gguf"
            )));
        }
        let url = format!(
            "{}/{repo}/resolve/main/{file}",
            hf_endpoint.trim_end_matches('/')
        );
        let repo_name = repo.rsplit('/').next().unwrap_or(repo);
        let tag = file.trim_end_matches(".gguf");
        (url, format!("{}:{}", sanitize(repo_name), sanitize(tag)))
    } else if body.starts_with("http://") || body.starts_with("https://") {
        let file = body
            .rsplit('/')
            .next()
            .unwrap_or("model")
            .split('?')
            .next()
            .unwrap_or("model");
        (body.to_string(), sanitize(file.trim_end_matches(".gguf")))
    } else {
        return Err(PullError::BadSpec(format!(
            "`{spec}` is not a URL or hf.co/ORG/REPO:FILE name"
        )));
    };
    let name = normalize_name(name.unwrap_or(&default_name))?;
    Ok(PullSpec { url, name, sha256 })
}

/// The store's directory of partial downloads.
pub const DOWNLOADS_DIR: &str = ".downloads";

fn partial_path(store: &ModelStore, url: &str) -> PathBuf {
    let key = super::hex(&Sha256::digest(url.as_bytes())[..12]);
    store
        .root()
        .join(DOWNLOADS_DIR)
        .join(format!("{key}.partial"))
}

/// Beside a partial download that may be resumed (its length and digest are
/// known): its existence is what says so.
fn resumable_marker(partial: &Path) -> PathBuf {
    partial.with_extension("partial.resumable")
}

/// Clean the downloads directory after a crash: partial files that no
/// running pull holds and that cannot be resumed go, and so do markers
/// without their file. Answers what it removed.
pub(super) fn recover_downloads(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return done;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let stale = match path.extension().and_then(|e| e.to_str()) {
            Some("partial") => {
                // A running pull holds a lock on its file.
                let free = std::fs::File::open(&path)
                    .map(|f| f.try_lock_shared().is_ok())
                    .unwrap_or(false);
                free && !resumable_marker(&path).exists()
            }
            Some("resumable") => !path.with_extension("").exists(),
            _ => false,
        };
        if stale && std::fs::remove_file(&path).is_ok() {
            done.push(format!("removed {}", path.display()));
        }
    }
    done
}

async fn hash_file(path: &Path) -> Result<String, PullError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || super::sha256_file(&path))
        .await
        .map_err(|e| PullError::Http(e.to_string()))?
        .map(|d| d.trim_start_matches("sha256:").to_string())
        .map_err(PullError::Store)
}

/// Redirects a download may follow.
const MAX_REDIRECTS: usize = 5;

/// Download `spec` into `store`, reporting progress on `progress`. At most
/// `max_bytes` are accepted, announced or not. A download that fails keeps
/// its partial file only when it can really be resumed (its length and
/// digest are known); otherwise the partial file is deleted.
pub async fn pull(
    store: &ModelStore,
    spec: &PullSpec,
    quantize: Option<quantize::Target>,
    max_bytes: u64,
    progress: mpsc::UnboundedSender<PullEvent>,
) -> Result<ImportOutcome, PullError> {
    let partial = partial_path(store, &spec.url);
    let result = download(store, spec, quantize, max_bytes, &partial, progress).await;
    if let Err((e, keep)) = &result {
        if !keep {
            let _ = tokio::fs::remove_file(&partial).await;
            let _ = tokio::fs::remove_file(resumable_marker(&partial)).await;
        }
        tracing::warn!(url = %spec.url, error = %e, kept_partial = keep, "pull failed");
    }
    result.map_err(|(e, _)| e)
}

/// The download itself; an error says whether the partial file may stay.
async fn download(
    store: &ModelStore,
    spec: &PullSpec,
    quantize: Option<quantize::Target>,
    max_bytes: u64,
    partial: &Path,
    progress: mpsc::UnboundedSender<PullEvent>,
) -> Result<ImportOutcome, (PullError, bool)> {
    let drop_it = |e: PullError| (e, false);
    if let Some(dir) = partial.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| drop_it(PullError::Http(format!("create {}: {e}", dir.display()))))?;
    }
    // One pull per file at a time, across processes; the lock also tells a
    // restarted server's clean-up that this file is in use.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .map_err(|e| drop_it(PullError::Http(format!("open {}: {e}", partial.display()))))?;
    if lock.try_lock().is_err() {
        // Not ours to delete.
        return Err((
            PullError::Http("this file is being downloaded by another pull already".into()),
            true,
        ));
    }
    let have = tokio::fs::metadata(partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()
        .map_err(|e| drop_it(PullError::Http(e.to_string())))?;
    let mut req = client.get(&spec.url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| (PullError::Http(e.to_string()), have > 0))?;
    let status = resp.status();
    let resuming = status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0;
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        // The partial file is already whole.
    } else if !status.is_success() {
        return Err(drop_it(PullError::Http(format!(
            "{} answered {status}",
            spec.url
        ))));
    }
    // A Hugging Face LFS file names its SHA-256 in X-Linked-Etag.
    let expected = spec.sha256.clone().or_else(|| {
        resp.headers()
            .get("x-linked-etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_ascii_lowercase())
            .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()))
    });
    let too_big = || {
        drop_it(PullError::Http(format!(
            "the file is larger than the pull limit of {max_bytes} bytes (--max-pull-bytes)"
        )))
    };
    if status != reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        let start = if resuming { have } else { 0 };
        let total = resp.content_length().map(|n| n.saturating_add(start));
        if total.is_some_and(|t| t > max_bytes) {
            return Err(too_big());
        }
        // Resumable later only with a known length and digest.
        let resumable = total.is_some() && expected.is_some();
        if resumable {
            let _ = tokio::fs::write(resumable_marker(partial), b"").await;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(resuming)
            .write(true)
            .truncate(!resuming)
            .open(partial)
            .await
            .map_err(|e| drop_it(PullError::Http(format!("open {}: {e}", partial.display()))))?;
        let mut completed = start;
        let _ = progress.send(PullEvent::Progress { completed, total });
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                (
                    PullError::Http(format!("the download broke off: {e}")),
                    resumable,
                )
            })?;
            completed = completed.saturating_add(chunk.len() as u64);
            if completed > max_bytes || total.is_some_and(|t| completed > t) {
                return Err(too_big());
            }
            file.write_all(&chunk).await.map_err(|e| {
                drop_it(PullError::Http(format!("write {}: {e}", partial.display())))
            })?;
            let _ = progress.send(PullEvent::Progress { completed, total });
        }
        file.flush()
            .await
            .map_err(|e| drop_it(PullError::Http(format!("write {}: {e}", partial.display()))))?;
        if let Some(t) = total {
            if completed != t {
                return Err((
                    PullError::Http(format!("got {completed} of {t} bytes")),
                    resumable,
                ));
            }
        }
    }
    let _ = progress.send(PullEvent::Verifying);
    let actual = hash_file(partial).await.map_err(drop_it)?;
    if let Some(expected) = expected {
        if expected != actual {
            return Err(drop_it(PullError::Digest { expected, actual }));
        }
    }
    let _ = progress.send(PullEvent::Installing);
    let (store2, name, path) = (store.clone(), spec.name.clone(), partial.to_path_buf());
    let outcome = tokio::task::spawn_blocking(move || store2.import(&name, &path, quantize))
        .await
        .map_err(|e| drop_it(PullError::Http(e.to_string())))?
        .map_err(|e| {
            // Said without the partial file's path, which is the server's.
            drop_it(match e {
                StoreError::NotFound(_) => PullError::NotAModel("not a GGUF file".into()),
                StoreError::NotGguf { reason, .. } => PullError::NotAModel(reason),
                other => PullError::Store(other),
            })
        })?;
    let _ = tokio::fs::remove_file(partial).await;
    let _ = tokio::fs::remove_file(resumable_marker(partial)).await;
    drop(lock);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = parse_spec(
            "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:smollm2-135m-instruct-q8_0.gguf",
            None,
            "https://huggingface.co",
        )
        .unwrap();
        assert_eq!(s.url, "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/resolve/main/smollm2-135m-instruct-q8_0.gguf");
        assert_eq!(
            s.name,
            "smollm2-135m-instruct-gguf:smollm2-135m-instruct-q8_0"
        );
        let d = "a".repeat(64);
        let s = parse_spec(
            &format!("http://127.0.0.1:9/files/Tiny.gguf@sha256:{d}"),
            Some("tiny:1"),
            "x",
        )
        .unwrap();
        assert_eq!(
            (s.url.as_str(), s.name.as_str(), s.sha256.as_deref()),
            (
                "http://127.0.0.1:9/files/Tiny.gguf",
                "tiny:1",
                Some(d.as_str())
            )
        );
        for bad in [
            "smollm2",
            "hf.co/a:b.gguf",
            "hf.co/a/b",
            "http://x/y.gguf@sha256:zz",
        ] {
            assert!(parse_spec(bad, None, "x").is_err(), "{bad}");
        }
    }
}
