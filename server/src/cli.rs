//! The command-line client: `kinko list`, `show`, `ps`, `rm`, `cp`,
//! `create` and `run` talk to a running kinko server over its Ollama API,
//! as Ollama's CLI does.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use std::io::Write;
use tokio::io::AsyncBufReadExt;

/// Read an NDJSON answer line by line; an `{"error": …}` line is an error.
/// `f` returns `false` to stop reading.
async fn read_ndjson(resp: reqwest::Response, mut f: impl FnMut(&Value) -> bool) -> Result<()> {
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.context("the answer broke off")?);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let v: Value = serde_json::from_slice(&line).context("a bad line in the answer")?;
            if let Some(e) = v["error"].as_str() {
                bail!("{e}");
            }
            if !f(&v) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A client of one server.
pub struct Client {
    base: String,
    http: reqwest::Client,
    key: Option<String>,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:3000`).
    pub fn new(base: &str, key: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            key,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!(
                    "kinko is not running at {}: start it with `kinko serve` (or set KINKO_HOST)",
                    self.base
                )
            } else {
                anyhow::anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| match &v["error"] {
                Value::String(s) => Some(s.clone()),
                e => e["message"].as_str().map(String::from),
            })
            .unwrap_or(text);
        bail!("{message} (HTTP {})", status.as_u16())
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = self.send(req).await?;
        let text = resp.text().await.context("reading the answer")?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the server's answer is not JSON")
    }

    /// `kinko list`.
    pub async fn list(&self) -> Result<()> {
        let v = self.json(reqwest::Method::GET, "/api/tags", None).await?;
        println!("{:<28} {:<14} {:>10}  {:<8}", "NAME", "ID", "SIZE", "QUANT");
        for m in v["models"].as_array().cloned().unwrap_or_default() {
            let digest = m["digest"].as_str().unwrap_or("");
            println!(
                "{:<28} {:<14} {:>10}  {:<8}",
                m["name"].as_str().unwrap_or("?"),
                &digest[..digest.len().min(12)],
                app::human_size(m["size"].as_u64().unwrap_or(0)),
                m["details"]["quantization_level"].as_str().unwrap_or("")
            );
        }
        Ok(())
    }

    /// `kinko show MODEL [--modelfile]`.
    pub async fn show(&self, model: &str, modelfile: bool) -> Result<()> {
        let v = self
            .json(
                reqwest::Method::POST,
                "/api/show",
                Some(json!({ "model": model })),
            )
            .await?;
        if modelfile {
            print!("{}", v["modelfile"].as_str().unwrap_or(""));
            return Ok(());
        }
        let d = &v["details"];
        println!("  Model");
        println!(
            "    architecture        {}",
            d["family"].as_str().unwrap_or("")
        );
        println!(
            "    parameters          {}",
            d["parameter_size"].as_str().unwrap_or("")
        );
        if let Some(info) = v["model_info"].as_object() {
            for (k, val) in info.iter().filter(|(k, _)| k.ends_with(".context_length")) {
                let _ = k;
                println!("    context length      {val}");
            }
            for (k, val) in info
                .iter()
                .filter(|(k, _)| k.ends_with(".embedding_length"))
            {
                let _ = k;
                println!("    embedding length    {val}");
            }
        }
        println!(
            "    quantization        {}",
            d["quantization_level"].as_str().unwrap_or("")
        );
        if let Some(caps) = v["capabilities"].as_array() {
            println!("\n  Capabilities");
            for c in caps.iter().filter_map(Value::as_str) {
                println!("    {c}");
            }
        }
        let params = v["parameters"].as_str().unwrap_or("");
        if !params.trim().is_empty() {
            println!("\n  Parameters");
            for line in params.lines() {
                println!("    {line}");
            }
        }
        let system = v["system"].as_str().unwrap_or("");
        if !system.is_empty() {
            println!("\n  System\n    {}", system.replace('\n', "\n    "));
        }
        println!(
            "\n  Modelfile\n    {}",
            v["modelfile"]
                .as_str()
                .unwrap_or("")
                .trim_end()
                .replace('\n', "\n    ")
        );
        Ok(())
    }

    /// `kinko ps`.
    pub async fn ps(&self) -> Result<()> {
        let v = self.json(reqwest::Method::GET, "/api/ps", None).await?;
        println!("{:<28} {:>10}  {:<24}", "NAME", "SIZE", "UNTIL");
        for m in v["models"].as_array().cloned().unwrap_or_default() {
            let until = m["expires_at"].as_str().unwrap_or("");
            let until = if until.starts_with("9999") {
                "forever"
            } else {
                until
            };
            println!(
                "{:<28} {:>10}  {:<24}",
                m["name"].as_str().unwrap_or("?"),
                app::human_size(m["size"].as_u64().unwrap_or(0)),
                until
            );
        }
        Ok(())
    }

    /// `kinko rm MODEL…`.
    pub async fn rm(&self, models: &[String]) -> Result<()> {
        for m in models {
            self.json(
                reqwest::Method::DELETE,
                "/api/delete",
                Some(json!({ "model": m })),
            )
            .await?;
            println!("deleted '{m}'");
        }
        Ok(())
    }

    /// `kinko cp SOURCE DESTINATION`.
    pub async fn cp(&self, source: &str, destination: &str) -> Result<()> {
        self.json(
            reqwest::Method::POST,
            "/api/copy",
            Some(json!({ "source": source, "destination": destination })),
        )
        .await?;
        println!("copied '{source}' to '{destination}'");
        Ok(())
    }

    /// `kinko create NAME -f Modelfile [--quantize q8_0|q4_0]`.
    pub async fn create(
        &self,
        name: &str,
        file: &std::path::Path,
        quantize: Option<&str>,
    ) -> Result<()> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        // Check it here first, for errors that name the file and line.
        let parsed = crate::models::modelfile::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        // A relative FROM path is relative to the Modelfile, as in Ollama.
        let from = std::path::Path::new(&parsed.from);
        let looks_like_path = parsed.from.starts_with("./")
            || parsed.from.starts_with("../")
            || parsed.from.starts_with('/')
            || parsed.from.ends_with(".gguf");
        let local = if looks_like_path && from.is_relative() {
            let base = file.parent().unwrap_or(std::path::Path::new("."));
            Some(std::fs::canonicalize(base.join(from)).with_context(|| {
                format!("{}: FROM {}: no such file", file.display(), parsed.from)
            })?)
        } else {
            Some(from.to_path_buf()).filter(|p| looks_like_path && p.is_file())
        };
        let mut body = match local {
            // The file is on this machine: upload it as a blob (the server
            // may be another machine), then name the blob.
            Some(path) => {
                let digest = self.push_blob(&path).await?;
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .filter(|n| n.ends_with(".gguf"))
                    .unwrap_or_else(|| "model.gguf".into());
                let mut body = json!({
                    "model": name,
                    "files": { file_name: digest },
                    "parameters": serde_json::to_value(&parsed.parameters)?,
                    "stream": false,
                });
                if let Some(system) = &parsed.system {
                    body["system"] = json!(system);
                }
                if let Some(template) = &parsed.template {
                    body["template"] = json!(template);
                }
                body
            }
            None => json!({
                "model": name,
                "modelfile": crate::models::modelfile::render(&parsed),
                "stream": false,
            }),
        };
        if let Some(q) = quantize {
            body["quantize"] = json!(q);
        }
        self.json(reqwest::Method::POST, "/api/create", Some(body))
            .await?;
        println!("created '{name}'");
        Ok(())
    }

    /// Upload the GGUF file at `path` as a blob unless the server has it
    /// already (`HEAD`, then `POST /api/blobs/sha256:…`, streamed, with a
    /// progress bar on stderr); answers its digest.
    async fn push_blob(&self, path: &std::path::Path) -> Result<String> {
        let owned = path.to_path_buf();
        let digest = tokio::task::spawn_blocking(move || crate::models::sha256_file(&owned))
            .await
            .context("hashing the model file")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let url = format!("/api/blobs/{digest}");
        let head = self
            .request(reqwest::Method::HEAD, &url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("request to {} failed: {e}", self.base))?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        let size = file.metadata().await?.len();
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("uploading");
        let shown = bar.clone();
        let chunks = futures::stream::try_unfold(file, move |mut file| {
            let shown = shown.clone();
            async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 1 << 20];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                buf.truncate(n);
                shown.inc(n as u64);
                Ok(Some((buf, file)))
            }
        });
        let sent = self
            .send(
                self.request(reqwest::Method::POST, &url)
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .body(reqwest::Body::wrap_stream(chunks)),
            )
            .await;
        bar.finish_and_clear();
        sent.with_context(|| format!("uploading {}", path.display()))?;
        Ok(digest)
    }

    /// `kinko pull SPEC`: download with a progress bar (on stderr).
    pub async fn pull(&self, spec: &str, name: Option<&str>, quantize: Option<&str>) -> Result<()> {
        let mut body = json!({ "model": spec, "stream": true });
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        if let Some(q) = quantize {
            body["quantize"] = json!(q);
        }
        let resp = self
            .send(self.request(reqwest::Method::POST, "/api/pull").json(&body))
            .await?;
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut done = false;
        let read = read_ndjson(resp, |v| {
            match v["status"].as_str().unwrap_or("") {
                "downloading" => {
                    if let Some(t) = v["total"].as_u64() {
                        bar.set_length(t);
                    }
                    bar.set_message("pulling");
                    bar.set_position(v["completed"].as_u64().unwrap_or(0));
                }
                "success" => done = true,
                other => bar.println(other),
            }
            !done
        })
        .await;
        if let Err(e) = read {
            bar.abandon();
            return Err(e);
        }
        if !done {
            bail!("the server stopped answering before the pull finished");
        }
        bar.finish_and_clear();
        println!("success");
        Ok(())
    }

    /// Stream one answer to stdout; returns the assistant's text, or `None`
    /// when Ctrl-C stopped it (the dropped request cancels the generation).
    async fn answer(&self, model: &str, messages: &[Value]) -> Result<Option<String>> {
        let req = self
            .request(reqwest::Method::POST, "/api/chat")
            .json(&json!({ "model": model, "messages": messages, "stream": true }));
        let stream = async {
            let resp = self.send(req).await?;
            let mut text = String::new();
            let mut out = std::io::stdout();
            read_ndjson(resp, |v| {
                if let Some(piece) = v["message"]["content"].as_str() {
                    text.push_str(piece);
                    let _ = out.write_all(piece.as_bytes());
                    let _ = out.flush();
                }
                true
            })
            .await?;
            Ok::<String, anyhow::Error>(text)
        };
        tokio::select! {
            r = stream => {
                println!();
                r.map(Some)
            }
            _ = tokio::signal::ctrl_c() => {
                println!("\n(stopped)");
                Ok(None)
            }
        }
    }

    /// `kinko run MODEL [PROMPT]`: one answer, or an interactive chat
    /// (`/bye` or Ctrl-D leaves; Ctrl-C stops an answer, not the session).
    pub async fn run(&self, model: &str, prompt: Option<String>) -> Result<()> {
        // Load the model first, so a bad name fails before any typing.
        self.json(
            reqwest::Method::POST,
            "/api/generate",
            Some(json!({ "model": model })),
        )
        .await?;
        if let Some(p) = prompt {
            self.answer(model, &[json!({"role": "user", "content": p})])
                .await?;
            return Ok(());
        }
        let mut history: Vec<Value> = Vec::new();
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            print!(">>> ");
            let _ = std::io::stdout().flush();
            let line = tokio::select! {
                l = lines.next_line() => l.context("reading stdin")?,
                _ = tokio::signal::ctrl_c() => {
                    println!("\nUse Ctrl + d or /bye to exit.");
                    continue;
                }
            };
            let Some(line) = line else {
                println!();
                return Ok(());
            };
            let line = line.trim();
            match line {
                "" => continue,
                "/bye" => return Ok(()),
                "/clear" => {
                    history.clear();
                    println!("Cleared session context");
                    continue;
                }
                "/?" | "/help" => {
                    println!("  /bye    leave\n  /clear  forget the conversation\n  Ctrl-C  stop the answer");
                    continue;
                }
                _ => {}
            }
            history.push(json!({"role": "user", "content": line}));
            match self.answer(model, &history).await {
                Ok(Some(text)) => history.push(json!({"role": "assistant", "content": text})),
                Ok(None) => {
                    history.pop();
                }
                Err(e) => {
                    eprintln!("Error: {e}");
                    history.pop();
                }
            }
        }
    }
}
