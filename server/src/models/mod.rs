//! The on-disk model store under `$KINKO_HOME/models`: one directory per
//! model (mistral.rs names a GGUF pipeline by its directory) holding the
//! GGUF file and a `manifest.json`. Imports are atomic: they are assembled
//! in a hidden temporary directory and renamed into place, so an interrupted
//! import never leaves a half model listed.

pub mod blobs;
pub mod embedding;
pub mod gguf;
pub mod pull;
pub mod quantize;

/// The GGUF validator (its own crate, to be fuzzed on its own).
pub use kinko_parse::gguf as validate;
/// The Modelfile parser (its own crate, to be fuzzed on its own).
pub use kinko_parse::modelfile;

use app::api::ModelSummary;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The GGUF file's name inside a model directory.
pub const MODEL_FILE: &str = "model.gguf";
/// The manifest's name inside a model directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Problems with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The model name is not `name[:tag]` of lowercase letters, digits, `.`, `_`, `-`.
    #[error(
        "invalid model name `{0}`: use name[:tag] with lowercase letters, digits, '.', '_' or '-'"
    )]
    InvalidName(String),
    /// A digest that is not `sha256:` and exactly 64 hex digits.
    #[error("invalid digest `{0}`: use sha256: and 64 hex digits")]
    InvalidDigest(String),
    /// The file is not a GGUF model kinko can read.
    #[error("{path}: not a readable GGUF file: {reason}")]
    NotGguf {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No installed model or GGUF file by that name.
    #[error("`{0}` is neither an installed model nor a GGUF file")]
    NotFound(String),
    /// The directory is not an embedding model kinko can read.
    #[error("{path}: not an embedding model kinko reads: {reason}")]
    NotEmbedding {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// What was asked applies to chat models only.
    #[error("`{0}` is an embedding model: {1}")]
    EmbeddingModel(String, &'static str),
    /// Filesystem trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// What a model does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A GGUF chat model, run by mistral.rs.
    #[default]
    Chat,
    /// A sentence-transformers BERT model (safetensors), run by
    /// [`crate::embed`]: it makes vectors, not answers.
    Embedding,
}

impl ModelKind {
    /// Whether this is a chat model (the manifest leaves the kind out then,
    /// as manifests written before there were other kinds do).
    pub fn is_chat(&self) -> bool {
        *self == ModelKind::Chat
    }

    /// The weights' file format.
    pub fn format(&self) -> &'static str {
        match self {
            ModelKind::Chat => "gguf",
            ModelKind::Embedding => "safetensors",
        }
    }

    /// The weights' file name inside a model directory.
    pub fn file(&self) -> &'static str {
        match self {
            ModelKind::Chat => MODEL_FILE,
            ModelKind::Embedding => embedding::WEIGHTS,
        }
    }

    /// Every file a model directory of this kind holds (besides the
    /// manifest), relative to it.
    pub fn files(&self) -> &'static [&'static str] {
        match self {
            ModelKind::Chat => &[MODEL_FILE],
            ModelKind::Embedding => embedding::FILES,
        }
    }
}

/// What the store knows about one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `name:tag`.
    pub name: String,
    /// What the model does (chat when left out).
    #[serde(default, skip_serializing_if = "ModelKind::is_chat")]
    pub kind: ModelKind,
    /// The weights file, relative to the model directory.
    pub file: String,
    /// `sha256:<hex>` of the weights file.
    pub digest: String,
    /// File size in bytes.
    pub size: u64,
    /// Digest of the file it was imported from, when kinko converted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// Model family from the GGUF metadata, e.g. `llama`.
    pub architecture: String,
    /// The weight format of most parameters, e.g. `Q4_1`.
    pub quantization: String,
    /// Number of parameters.
    pub parameter_count: u64,
    /// Context window in tokens (an embedding model's: the most it reads
    /// of one input).
    pub context_length: usize,
    /// An embedding model's vector length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_length: Option<usize>,
    /// Default system prompt, if the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The Modelfile's TEMPLATE, kept for `show` (the GGUF's own chat
    /// template is what formats prompts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Default sampling parameters.
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Seconds since the Unix epoch when it was imported.
    pub created: u64,
    /// The GGUF's chat template (`tokenizer.chat_template`), which formats
    /// every prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// The GGUF header's `general.*` and `<arch>.*` values, for `show`.
    /// Empty in a manifest written before kinko kept them: the store reads
    /// them then (see [`ModelStore::list`]).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub model_info: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    /// A manifest for `name` of `kind`, made now, with nothing else known.
    pub fn blank(name: String, kind: ModelKind) -> Self {
        Manifest {
            name,
            kind,
            file: kind.file().into(),
            digest: String::new(),
            size: 0,
            source_digest: None,
            architecture: String::new(),
            quantization: String::new(),
            parameter_count: 0,
            context_length: 0,
            embedding_length: None,
            system: None,
            template: None,
            parameters: serde_json::Map::new(),
            chat_template: None,
            model_info: serde_json::Map::new(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// The picker's view of this model.
    pub fn summary(&self) -> ModelSummary {
        ModelSummary {
            name: self.name.clone(),
            size: self.size,
            quantization: self.quantization.clone(),
            context_length: self.context_length,
            architecture: self.architecture.clone(),
            preset: self.preset(),
            upstream: None,
            capabilities: self.capabilities(),
        }
    }

    /// What the model can do: an embedding model embeds; a chat model
    /// completes, and takes tools when its chat template renders them.
    /// kinko passes no thinking switch to the template and reads no
    /// images, so no model claims thinking or vision, and requests that
    /// need them are refused.
    pub fn capabilities(&self) -> Vec<app::api::Capability> {
        match self.kind {
            ModelKind::Chat => {
                let mut caps = vec![app::api::Capability::Completion];
                if self
                    .chat_template
                    .as_deref()
                    .is_some_and(template_renders_tools)
                {
                    caps.push(app::api::Capability::Tools);
                }
                caps
            }
            ModelKind::Embedding => vec![app::api::Capability::Embedding],
        }
    }

    /// Its Modelfile's parameters (none where the stored ones do not read).
    pub fn preset_parameters(&self) -> modelfile::Parameters {
        serde_json::from_value(serde_json::Value::Object(self.parameters.clone()))
            .unwrap_or_default()
    }

    /// What its Modelfile set, for the chat settings panel.
    pub fn preset(&self) -> app::api::ModelPreset {
        let p = self.preset_parameters();
        app::api::ModelPreset {
            sampling: app::api::Sampling {
                system: self.system.clone().filter(|s| !s.trim().is_empty()),
                temperature: p.temperature,
                top_p: p.top_p,
                top_k: p.top_k,
                max_tokens: p.num_predict,
            },
            num_ctx: p.num_ctx,
        }
    }
}

/// A model found in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledModel {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl InstalledModel {
    /// The GGUF file's full path.
    pub fn gguf_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.file)
    }
}

/// Normalise `name[:tag]` to `name:tag` (tag defaults to `latest`).
pub fn normalize_name(name: &str) -> Result<String, StoreError> {
    let (base, tag) = match name.split_once(':') {
        Some((b, t)) => (b, t),
        None => (name, "latest"),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
    };
    if ok(base) && ok(tag) {
        Ok(format!("{base}:{tag}"))
    } else {
        Err(StoreError::InvalidName(name.to_string()))
    }
}

/// Check a digest as Ollama does: `sha256:` and exactly 64 hex digits
/// (either case); answers it in lowercase. Nothing else, so a digest can
/// never carry a path.
pub fn parse_digest(digest: &str) -> Result<String, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
        }
        _ => {
            let mut shown: String = digest.chars().take(80).collect();
            shown.retain(|c| !c.is_control());
            Err(StoreError::InvalidDigest(shown))
        }
    }
}

/// Why the directory `dir` (found in the store's root as `entry`) is not a
/// model kinko lists, if it is not. The store never follows a symlink: a
/// model directory, its manifest and its GGUF file must all be real, and the
/// manifest must name this directory and a file inside it.
fn check_model_dir(entry: &fs::DirEntry, manifest: &Manifest) -> Result<(), String> {
    if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
        return Err("not a directory (symlinks are not followed)".into());
    }
    let name = normalize_name(&manifest.name).map_err(|e| e.to_string())?;
    if name != manifest.name || entry.file_name().to_str() != Some(&name.replace(':', "-")) {
        return Err(format!(
            "its manifest names another model, `{}`",
            manifest.name
        ));
    }
    if manifest.file != manifest.kind.file() {
        return Err(format!("its manifest names the file `{}`", manifest.file));
    }
    parse_digest(&manifest.digest).map_err(|e| e.to_string())?;
    for file in manifest.kind.files() {
        regular_file(&entry.path(), file)?;
    }
    Ok(())
}

/// Why `dir/rel` is not a regular file inside `dir` (no symlink on the way),
/// if it is not.
pub(crate) fn regular_file(dir: &Path, rel: &str) -> Result<(), String> {
    let mut path = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&path) {
            Ok(m) if last && m.file_type().is_file() => {}
            Ok(m) if !last && m.file_type().is_dir() => {}
            Ok(_) => return Err(format!("{rel} is not a regular file")),
            Err(e) => return Err(format!("{rel}: {e}")),
        }
    }
    Ok(())
}

/// The model store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

/// What [`ModelStore::import`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportOutcome {
    /// The model was copied in.
    Imported(Manifest),
    /// The same file was already installed under that name.
    AlreadyInstalled(Manifest),
}

impl ModelStore {
    /// A store under `home` (models live in `home/models`).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self {
            root: home.into().join("models"),
        }
    }

    /// `$KINKO_HOME`, else the XDG data dir (`~/.local/share/kinko`).
    pub fn default_home() -> PathBuf {
        if let Some(home) = std::env::var_os("KINKO_HOME") {
            return PathBuf::from(home);
        }
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("kinko")
    }

    /// The directory holding one directory per model.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir_for(&self, name: &str) -> PathBuf {
        self.root.join(name.replace(':', "-"))
    }

    /// Every installed model, sorted by name. Unreadable entries are skipped
    /// with a warning; temporary import directories are never listed.
    pub fn list(&self) -> Vec<InstalledModel> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut models: Vec<InstalledModel> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let dir = e.path();
                let manifest_path = dir.join(MANIFEST_FILE);
                let real = fs::symlink_metadata(&manifest_path)
                    .ok()?
                    .file_type()
                    .is_file();
                let text = real.then(|| fs::read_to_string(&manifest_path).ok())??;
                let manifest = match serde_json::from_str::<Manifest>(&text) {
                    Ok(manifest) => manifest,
                    Err(err) => {
                        tracing::warn!(dir = %dir.display(), %err, "skipping unreadable manifest");
                        return None;
                    }
                };
                match check_model_dir(&e, &manifest) {
                    Ok(()) => Some(InstalledModel {
                        manifest: read_header_once(&dir, manifest),
                        dir,
                    }),
                    Err(why) => {
                        tracing::warn!(dir = %dir.display(), why, "skipping a model directory");
                        None
                    }
                }
            })
            .collect();
        models.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        models
    }

    /// The installed model called `name` (`name` or `name:tag`).
    pub fn get(&self, name: &str) -> Option<InstalledModel> {
        let name = normalize_name(name).ok()?;
        self.list().into_iter().find(|m| m.manifest.name == name)
    }

    /// Copy a GGUF file into the store as `name`, requantizing it to
    /// `quantize` on the way in when given. Blocking; call it from
    /// `spawn_blocking` in async code. Importing the same file under the same
    /// name (and format) again does nothing.
    pub fn import(
        &self,
        name: &str,
        source: &Path,
        quantize: Option<quantize::Target>,
    ) -> Result<ImportOutcome, StoreError> {
        let name = normalize_name(name)?;
        let source_info = gguf::inspect(source)?;
        let source_digest = sha256_file(source)?;
        if let Some(existing) = self.get(&name) {
            let m = &existing.manifest;
            let same_source = match quantize {
                None => m.digest == source_digest && m.source_digest.is_none(),
                Some(_) => m.source_digest.as_deref() == Some(source_digest.as_str()),
            };
            if same_source && existing.gguf_path().is_file() {
                return Ok(ImportOutcome::AlreadyInstalled(existing.manifest));
            }
        }
        self.assemble(&name, |tmp| {
            let target = tmp.join(MODEL_FILE);
            let (size, digest, info, converted_from) = match quantize {
                None => {
                    let (size, digest) = self.link_or_copy(source, &target, &source_digest)?;
                    if digest != source_digest {
                        return Err(StoreError::Io {
                            context: format!("copy {}", source.display()),
                            source: std::io::Error::other("the file changed while it was copied"),
                        });
                    }
                    (size, digest, source_info, None)
                }
                Some(q) => {
                    quantize::requantize(source, &target, q)?;
                    let size = fs::metadata(&target)
                        .map_err(io("stat the converted model"))?
                        .len();
                    let digest = sha256_file(&target)?;
                    let info = gguf::inspect(&target)?;
                    (size, digest, info, Some(source_digest.clone()))
                }
            };
            Ok(Manifest {
                digest,
                size,
                source_digest: converted_from,
                architecture: info.architecture,
                quantization: info.quantization,
                parameter_count: info.parameter_count,
                context_length: info.context_length,
                chat_template: info.chat_template,
                model_info: info.model_info,
                ..Manifest::blank(name.clone(), ModelKind::Chat)
            })
        })
        .map(ImportOutcome::Imported)
    }

    /// Assemble the model `name` in a hidden temporary directory: `fill`
    /// writes its files there and answers its manifest, which is written
    /// beside them before the directory is renamed into place. On failure
    /// the temporary directory goes and the store is as it was.
    pub(crate) fn assemble(
        &self,
        name: &str,
        fill: impl FnOnce(&Path) -> Result<Manifest, StoreError>,
    ) -> Result<Manifest, StoreError> {
        fs::create_dir_all(&self.root).map_err(io(format!("create {}", self.root.display())))?;
        let tmp = self.root.join(format!(
            ".import-{}-{}",
            name.replace(':', "-"),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        let result = fill(&tmp).and_then(|manifest| {
            write_json_atomic(&tmp.join(MANIFEST_FILE), &manifest)?;
            self.install_dir(&tmp, name)?;
            Ok(manifest)
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }
}

/// A chat model's manifest written before kinko kept the GGUF's chat
/// template and header values: read them from the GGUF now and keep them
/// in the manifest (once; on failure the manifest stays as it was).
fn read_header_once(dir: &Path, mut manifest: Manifest) -> Manifest {
    if !manifest.kind.is_chat() || !manifest.model_info.is_empty() {
        return manifest;
    }
    match gguf::inspect(&dir.join(&manifest.file)) {
        Ok(info) => {
            manifest.chat_template = info.chat_template;
            manifest.model_info = info.model_info;
            if let Err(err) = write_json_atomic(&dir.join(MANIFEST_FILE), &manifest) {
                tracing::warn!(dir = %dir.display(), %err, "could not update the manifest");
            }
        }
        Err(err) => tracing::warn!(dir = %dir.display(), %err, "could not read the GGUF header"),
    }
    manifest
}

/// Whether a Jinja chat template renders the request's `tools`: the name
/// `tools` inside one of its `{% … %}` or `{{ … }}` tags (text outside the
/// tags, such as a system prompt that mentions tools, does not count).
pub fn template_renders_tools(template: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = template;
    while let Some(open) = rest.find(['{']) {
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('%') => "%}",
            Some('{') => "}}",
            _ => {
                rest = after;
                continue;
            }
        };
        let Some(end) = after.find(close) else {
            return false;
        };
        let tag = &after[1..end];
        let uses = tag.match_indices("tools").any(|(at, _)| {
            let before = tag[..at].chars().next_back();
            let next = tag[at + 5..].chars().next();
            !before.is_some_and(|c| ident(c) || c == '.' || c == '\'' || c == '"')
                && !next.is_some_and(|c| ident(c) || c == '\'' || c == '"')
        });
        if uses {
            return true;
        }
        rest = &after[end + close.len()..];
    }
    false
}

/// Whether process `pid` is running (Linux's `/proc`; elsewhere, assume so).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

impl ModelStore {
    /// Clean up after a process that died in the middle of changing the
    /// store (`kill -9`, power loss): temporary import, copy and delete
    /// directories of dead processes are removed; a model moved aside to be
    /// replaced comes back when its replacement never arrived; manifests
    /// half-written inside model directories are removed; partial downloads
    /// that cannot be resumed are removed. Work of running processes is left
    /// alone. Answers what it removed or restored, for the log.
    pub fn recover(&self) -> Vec<String> {
        let mut done = self.recover_blobs();
        let Ok(entries) = fs::read_dir(&self.root) else {
            return done;
        };
        for entry in entries.filter_map(Result::ok) {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let path = entry.path();
            let real_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if name == pull::DOWNLOADS_DIR {
                done.extend(pull::recover_downloads(&path));
                continue;
            }
            if !name.starts_with('.') {
                // A model directory: a manifest write that never finished.
                let stray = path.join(format!("{MANIFEST_FILE}.tmp"));
                if real_dir
                    && fs::symlink_metadata(&stray).is_ok()
                    && fs::remove_file(&stray).is_ok()
                {
                    done.push(format!("removed {}", stray.display()));
                }
                continue;
            }
            let Some((kind, rest)) = [".import-", ".copy-", ".deleting-", ".old-"]
                .iter()
                .find_map(|k| name.strip_prefix(k).map(|r| (*k, r)))
            else {
                continue;
            };
            let Some((model_dir, pid)) = rest
                .rsplit_once('-')
                .and_then(|(m, p)| Some((m, p.parse::<u32>().ok()?)))
            else {
                continue;
            };
            if process_alive(pid) && pid != std::process::id() {
                continue;
            }
            if !real_dir {
                let _ = fs::remove_file(&path);
                continue;
            }
            let home = self.root.join(model_dir);
            if kind == ".old-" && fs::symlink_metadata(&home).is_err() {
                if fs::rename(&path, &home).is_ok() {
                    done.push(format!("restored {}", home.display()));
                }
            } else if fs::remove_dir_all(&path).is_ok() {
                done.push(format!("removed {}", path.display()));
            }
        }
        done
    }

    /// Move the assembled directory `tmp` into place as model `name`,
    /// replacing a model of that name (renames only: never half there).
    pub(crate) fn install_dir(&self, tmp: &Path, name: &str) -> Result<(), StoreError> {
        let final_dir = self.dir_for(name);
        if final_dir.exists() {
            // Named so that a crash between the two renames can be undone.
            let old = self.root.join(format!(
                ".old-{}-{}",
                name.replace(':', "-"),
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&old);
            fs::rename(&final_dir, &old).map_err(io("move the old model aside"))?;
            fs::rename(tmp, &final_dir).map_err(io("install the model"))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(tmp, &final_dir).map_err(io("install the model"))?;
        }
        Ok(())
    }

    /// Make the preset `name` from a parsed Modelfile: its base is an
    /// installed model (weights hard-linked) or a GGUF path (imported, and
    /// requantized if asked); its system prompt and parameters go into the
    /// manifest. Blocking.
    pub fn create(
        &self,
        name: &str,
        modelfile: &modelfile::Modelfile,
        quantize: Option<quantize::Target>,
    ) -> Result<Manifest, StoreError> {
        let name = normalize_name(name)?;
        let from_path = Path::new(&modelfile.from);
        let base_installed = self.get(&modelfile.from);
        if let Some(base) = base_installed
            .as_ref()
            .filter(|b| !b.manifest.kind.is_chat())
        {
            return Err(StoreError::EmbeddingModel(
                base.manifest.name.clone(),
                "Modelfile presets apply to chat models only",
            ));
        }
        match (&base_installed, quantize) {
            (Some(base), None) => {
                if base.manifest.name != name && !self.copy(&base.manifest.name, &name)? {
                    return Err(StoreError::NotFound(modelfile.from.clone()));
                }
            }
            (Some(base), Some(q)) => {
                self.import(&name, &base.gguf_path(), Some(q))?;
            }
            (None, q) if from_path.is_file() => {
                self.import(&name, from_path, q)?;
            }
            (None, _) => return Err(StoreError::NotFound(modelfile.from.clone())),
        }
        let model = self
            .get(&name)
            .ok_or_else(|| StoreError::NotFound(name.clone()))?;
        let mut manifest = model.manifest;
        manifest.system = modelfile.system.clone();
        manifest.parameters = match serde_json::to_value(&modelfile.parameters) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        manifest.template = modelfile.template.clone();
        write_json_atomic(&model.dir.join(MANIFEST_FILE), &manifest)?;
        Ok(manifest)
    }

    /// Remove the model called `name`; `false` if there is none. The
    /// directory is renamed away first, so the model leaves the list at once.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let Some(model) = self.get(name) else {
            return Ok(false);
        };
        let trash = self.root.join(format!(
            ".deleting-{}-{}",
            model.manifest.name.replace(':', "-"),
            std::process::id()
        ));
        fs::rename(&model.dir, &trash).map_err(io(format!("remove {}", model.dir.display())))?;
        fs::remove_dir_all(&trash).map_err(io(format!("remove {}", trash.display())))?;
        Ok(true)
    }

    /// Copy the model `source` to the name `destination` (replacing one of
    /// that name); `false` if `source` is not installed. The weights are
    /// hard-linked where the filesystem allows.
    pub fn copy(&self, source: &str, destination: &str) -> Result<bool, StoreError> {
        let Some(model) = self.get(source) else {
            return Ok(false);
        };
        let dest = normalize_name(destination)?;
        // What enters the store under a new name is checked like any import
        // (and named by its model, not by its path in the store).
        let checked = match model.manifest.kind {
            ModelKind::Chat => gguf::validate(&model.gguf_path()).map(|_| ()),
            ModelKind::Embedding => embedding::inspect(&model.dir).map(|_| ()),
        };
        checked.map_err(|e| match e {
            StoreError::NotGguf { reason, .. } => StoreError::NotGguf {
                path: format!("model `{}`", model.manifest.name),
                reason,
            },
            StoreError::NotFound(_) => StoreError::NotFound(model.manifest.name.clone()),
            other => other,
        })?;
        let tmp = self.root.join(format!(
            ".copy-{}-{}",
            dest.replace(':', "-"),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        let result = (|| {
            link_files(&model.dir, &tmp, model.manifest.kind.files())?;
            let mut manifest = model.manifest.clone();
            manifest.name = dest.clone();
            write_json_atomic(&tmp.join(MANIFEST_FILE), &manifest)?;
            self.install_dir(&tmp, &dest)?;
            Ok(true)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }
}

/// Hard-link (or copy, where links cannot be made) the files `rel` of
/// directory `from` into `to`.
fn link_files(from: &Path, to: &Path, rel: &[&str]) -> Result<(), StoreError> {
    for file in rel {
        let (src, dst) = (from.join(file), to.join(file));
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io(format!("copy {file}")))?;
        }
    }
    Ok(())
}

/// Write `value` as pretty JSON to `path` through a temporary file and a rename.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Io {
        context: "encode manifest".into(),
        source: std::io::Error::other(e),
    })?;
    let mut f = fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    f.write_all(&text)
        .map_err(io(format!("write {}", tmp.display())))?;
    f.sync_all()
        .map_err(io(format!("sync {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))
}

/// `sha256:<hex>` of a file.
pub fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut f = fs::File::open(path).map_err(io(format!("open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

fn copy_hashing(from: &Path, to: &Path) -> Result<(u64, String), StoreError> {
    let mut src = fs::File::open(from).map_err(io(format!("open {}", from.display())))?;
    let mut dst = fs::File::create(to).map_err(io(format!("create {}", to.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .map_err(io(format!("read {}", from.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(io(format!("write {}", to.display())))?;
        size += n as u64;
    }
    dst.sync_all()
        .map_err(io(format!("sync {}", to.display())))?;
    Ok((size, format!("sha256:{}", hex(&hasher.finalize()))))
}

impl ModelStore {
    /// Put `from` (whose digest is `digest`) at `to`: a hard link when
    /// `from` is an uploaded blob (it never changes, so the model and the
    /// blob share the space), a hashed copy otherwise.
    fn link_or_copy(
        &self,
        from: &Path,
        to: &Path,
        digest: &str,
    ) -> Result<(u64, String), StoreError> {
        if self.is_blob(from) && fs::hard_link(from, to).is_ok() {
            let size = fs::metadata(to)
                .map_err(io(format!("stat {}", to.display())))?
                .len();
            return Ok((size, digest.to_string()));
        }
        copy_hashing(from, to)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_that_render_tools_are_told_apart() {
        let qwen = "{%- if tools %}<|im_start|>system\n{%- for tool in tools %}{{ tool | tojson }}{%- endfor %}{% endif %}";
        let llama = "{%- if tools is not none and not tools_in_user_message %}x{% endif %}";
        let smollm2 = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
        let prose = "You may use tools when asked. {{ messages[0]['content'] }}";
        let field = "{{ message.tools }}{{ 'tools' }}{{ my_tools }}";
        assert!(template_renders_tools(qwen));
        assert!(template_renders_tools(llama));
        assert!(!template_renders_tools(smollm2));
        assert!(!template_renders_tools(prose));
        assert!(!template_renders_tools(field));
        assert!(!template_renders_tools("{% if tools"));
    }
    use serde_json::json;

    #[test]
    fn names_are_normalised_and_checked() {
        assert_eq!(normalize_name("smollm2:135m").unwrap(), "smollm2:135m");
        assert_eq!(normalize_name("tiny").unwrap(), "tiny:latest");
        for bad in ["", "A:b", "a/b", "../x", "a:", ":b", "a b", ".hidden"] {
            assert!(normalize_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn import_is_atomic_and_idempotent() {
        let home = tempdir();
        let store = ModelStore::new(&home);
        let src = home.join("tiny.gguf");
        gguf::write_tiny_test_model(&src).unwrap();
        let first = store.import("tiny:1", &src, None).unwrap();
        let ImportOutcome::Imported(m) = first else {
            panic!("expected an import")
        };
        assert_eq!(m.architecture, "llama");
        assert_eq!(m.context_length, 128);
        assert!(m.digest.starts_with("sha256:"));
        assert!(matches!(
            store.import("tiny:1", &src, None).unwrap(),
            ImportOutcome::AlreadyInstalled(_)
        ));
        // A leftover temporary directory (an interrupted import) is not listed.
        fs::create_dir_all(store.root().join(".import-half-1")).unwrap();
        let names: Vec<_> = store.list().into_iter().map(|m| m.manifest.name).collect();
        assert_eq!(names, vec!["tiny:1".to_string()]);
        assert!(store.get("tiny:1").unwrap().gguf_path().is_file());
        // Not a GGUF file: refused with the same message as a missing
        // file (nothing of its bytes), nothing listed.
        let junk = home.join("junk.gguf");
        fs::write(&junk, b"root:x:0:0").unwrap();
        let refused = store.import("junk", &junk, None).unwrap_err();
        let missing = store
            .import("junk", &home.join("nothing-here"), None)
            .unwrap_err();
        assert!(matches!(refused, StoreError::NotFound(_)));
        assert_eq!(
            refused.to_string().replace("junk.gguf", "X"),
            missing.to_string().replace("nothing-here", "X")
        );
        assert!(!refused.to_string().contains("root"));
        // A directory and a FIFO: the same, and never blocking on the FIFO.
        let fifo = home.join("fifo.gguf");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        for odd in [home.clone(), fifo] {
            assert!(matches!(
                store.import("odd", &odd, None),
                Err(StoreError::NotFound(_))
            ));
        }
        // A GGUF whose tensor lies past the end of the file: one line.
        let broken = home.join("broken.gguf");
        fs::write(
            &broken,
            crate::models::validate::craft::Crafted::new()
                .kv_str("general.architecture", "llama")
                .tensor("blk.0.attn_q.weight", &[32, 32], 0, 0)
                .bytes(),
        )
        .unwrap();
        match store.import("broken", &broken, None) {
            Err(StoreError::NotGguf { reason, .. }) => {
                assert_eq!(
                    reason,
                    "tensor blk.0.attn_q.weight ends past the end of the file"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.list().len(), 1);
        // Copy and remove.
        assert!(store.copy("tiny:1", "tiny-copy").unwrap());
        assert!(!store.copy("nope", "x").unwrap());
        let copy = store.get("tiny-copy:latest").unwrap();
        assert_eq!(
            copy.manifest.digest,
            store.get("tiny:1").unwrap().manifest.digest
        );
        assert!(copy.gguf_path().is_file());
        assert!(store.remove("tiny:1").unwrap());
        assert!(!store.remove("tiny:1").unwrap());
        let names: Vec<_> = store.list().into_iter().map(|m| m.manifest.name).collect();
        assert_eq!(names, vec!["tiny-copy:latest".to_string()]);
        let _ = fs::remove_dir_all(&home);
    }

    #[test]
    fn digests_are_sha256_and_64_hex_digits_only() {
        let hex64 = "Ab".repeat(32);
        assert_eq!(
            parse_digest(&format!("sha256:{hex64}")).unwrap(),
            format!("sha256:{}", hex64.to_ascii_lowercase())
        );
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256-{hex64}"),
            format!("sha512:{hex64}"),
            format!("sha256:{}g", "a".repeat(63)),
            String::new(),
        ] {
            assert!(parse_digest(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_store_lists_no_symlink_and_no_manifest_that_points_elsewhere() {
        let home = tempdir();
        let store = ModelStore::new(&home);
        let src = home.join("tiny.gguf");
        gguf::write_tiny_test_model(&src).unwrap();
        store.import("tiny:1", &src, None).unwrap();
        let real = store.root().join("tiny-1");
        // A directory link to it, a manifest naming a file outside, one
        // naming another model, a GGUF that is a link out of the store.
        std::os::unix::fs::symlink(&real, store.root().join("linked-1")).unwrap();
        for (dir, edit) in [
            ("outside-1", ("file", json!("../../../etc/passwd"))),
            ("other-1", ("name", json!("tiny:1"))),
            ("badsum-1", ("digest", json!("sha256:../x"))),
        ] {
            let d = store.root().join(dir);
            fs::create_dir_all(&d).unwrap();
            fs::copy(real.join(MODEL_FILE), d.join(MODEL_FILE)).unwrap();
            let mut m: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(real.join(MANIFEST_FILE)).unwrap())
                    .unwrap();
            m["name"] = json!(dir.replace("-1", ":1"));
            m[edit.0] = edit.1;
            fs::write(d.join(MANIFEST_FILE), m.to_string()).unwrap();
        }
        let d = store.root().join("escape-1");
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(&src, d.join(MODEL_FILE)).unwrap();
        let mut m: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(real.join(MANIFEST_FILE)).unwrap()).unwrap();
        m["name"] = json!("escape:1");
        fs::write(d.join(MANIFEST_FILE), m.to_string()).unwrap();
        let names: Vec<String> = store.list().into_iter().map(|m| m.manifest.name).collect();
        assert_eq!(names, ["tiny:1"]);
    }

    #[test]
    fn a_copy_checks_the_file_again() {
        let home = tempdir();
        let store = ModelStore::new(&home);
        let src = home.join("tiny.gguf");
        gguf::write_tiny_test_model(&src).unwrap();
        store.import("tiny:1", &src, None).unwrap();
        // Damaged in the store after it was imported: cut short.
        let file = store.root().join("tiny-1").join(MODEL_FILE);
        let len = fs::metadata(&file).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - 64)
            .unwrap();
        let err = store.copy("tiny:1", "copy:1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "model `tiny:1`: not a readable GGUF file: tensor token_embd.weight ends past the end of the file"
        );
        assert!(store.get("copy:1").is_none());
    }

    #[test]
    fn recovery_removes_the_work_of_dead_processes_and_restores_a_replaced_model() {
        let home = tempdir();
        let store = ModelStore::new(&home);
        let src = home.join("tiny.gguf");
        gguf::write_tiny_test_model(&src).unwrap();
        store.import("tiny:1", &src, None).unwrap();
        let root = store.root().to_path_buf();
        // No process has this id (beyond the kernel's pid_max).
        let dead = 4_194_400;
        // A replacement that died between its two renames.
        fs::rename(
            root.join("tiny-1"),
            root.join(format!(".old-tiny-1-{dead}")),
        )
        .unwrap();
        fs::create_dir_all(root.join(format!(".import-x-1-{dead}"))).unwrap();
        fs::create_dir_all(root.join(format!(".copy-y-1-{dead}"))).unwrap();
        // The work of a live process (pid 1) stays.
        fs::create_dir_all(root.join(".import-z-1-1")).unwrap();
        let done = store.recover();
        assert_eq!(done.len(), 3, "{done:?}");
        assert_eq!(store.list().len(), 1, "the replaced model is back");
        assert!(root.join(".import-z-1-1").exists());
        assert!(!root.join(format!(".import-x-1-{dead}")).exists());
    }

    #[test]
    fn embedding_models_keep_their_kind_through_copy_and_refuse_presets() {
        let home = tempdir();
        let store = ModelStore::new(&home);
        let src = crate::embed::tests::model_dir();
        let ImportOutcome::Imported(m) = store.import_embedding("mini", &src).unwrap() else {
            panic!("expected an import")
        };
        assert_eq!(
            (m.kind, m.embedding_length, m.context_length),
            (ModelKind::Embedding, Some(384), 256)
        );
        assert!(matches!(
            store.import_embedding("mini", &src).unwrap(),
            ImportOutcome::AlreadyInstalled(_)
        ));
        assert!(store.copy("mini", "mini:two").unwrap());
        let copy = store.get("mini:two").unwrap();
        assert_eq!(copy.manifest.kind, ModelKind::Embedding);
        for file in embedding::FILES {
            assert!(copy.dir.join(file).is_file(), "{file}");
        }
        let preset = modelfile::Modelfile {
            from: "mini".into(),
            system: Some("no".into()),
            template: None,
            parameters: Default::default(),
        };
        assert!(matches!(
            store.create("mini:preset", &preset, None),
            Err(StoreError::EmbeddingModel(..))
        ));
        assert!(store.remove("mini:two").unwrap());
        // A manifest written before kinds existed reads as a chat model.
        let mut old = serde_json::to_value(&m).unwrap();
        old.as_object_mut().unwrap().remove("kind");
        let read: Manifest = serde_json::from_value(old).unwrap();
        assert_eq!(read.kind, ModelKind::Chat);
        assert!(
            !serde_json::to_string(&Manifest::blank("a:b".into(), ModelKind::Chat))
                .unwrap()
                .contains("kind")
        );
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kinko-store-test-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
