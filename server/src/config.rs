//! Command line and environment: one `clap` struct per command, every field
//! also readable from a `KINKO_…` variable. Defaults live only here.

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// kinko: a private, self-hosted LLM chat in one binary.
#[derive(Debug, Parser)]
#[command(name = "kinko", version, about)]
pub struct Cli {
    /// Where models and settings live (default: ~/.local/share/kinko).
    #[arg(long, env = "KINKO_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// The server the client commands talk to.
    #[arg(
        long,
        env = "KINKO_HOST",
        global = true,
        default_value = "http://127.0.0.1:3000"
    )]
    pub host: String,
    /// Engine compute threads (default: one per CPU core this process may use).
    #[arg(long, env = "KINKO_THREADS", global = true)]
    pub threads: Option<usize>,
    /// Let the compute threads float between cores instead of pinning each
    /// to its own.
    #[arg(long, env = "KINKO_NO_PIN", global = true, value_parser = BoolishValueParser::new())]
    pub no_pin: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the chat UI and the HTTP API.
    Serve(Box<ServeConfig>),
    /// Copy a GGUF file (a chat model) or a sentence-transformers directory
    /// (an embedding model) into the model store under a name.
    Import {
        /// Model name, `name[:tag]`.
        name: String,
        /// The GGUF file, or the embedding model's directory.
        path: PathBuf,
        /// Requantize while importing: `q8_0` or `q4_0`.
        #[arg(long)]
        quantize: Option<String>,
    },
    /// List installed models (asks the running server).
    #[command(alias = "ls")]
    List,
    /// Show a model's details, parameters and Modelfile.
    Show {
        /// The model.
        model: String,
        /// Print only the Modelfile.
        #[arg(long)]
        modelfile: bool,
    },
    /// List the models loaded in memory.
    Ps,
    /// Remove models.
    Rm {
        /// The models.
        #[arg(required = true)]
        models: Vec<String>,
    },
    /// Copy a model under a new name.
    Cp {
        /// The model to copy.
        source: String,
        /// The new name.
        destination: String,
    },
    /// Make a model (a preset) from a Modelfile.
    Create {
        /// The new model's name.
        name: String,
        /// The Modelfile.
        #[arg(short = 'f', long = "file", default_value = "Modelfile")]
        file: PathBuf,
        /// Requantize the weights: `q8_0` or `q4_0`.
        #[arg(long)]
        quantize: Option<String>,
    },
    /// Download a GGUF model: `hf.co/ORG/REPO:FILE.gguf` or a URL, either
    /// optionally ending in `@sha256:<hex>`.
    Pull {
        /// What to download.
        spec: String,
        /// The store name (default: from the file name).
        #[arg(long)]
        name: Option<String>,
        /// Requantize the weights: `q8_0` or `q4_0`.
        #[arg(long)]
        quantize: Option<String>,
    },
    /// Benchmark helper: drive the bare engine (no HTTP) and print one JSON
    /// line per generation. Used by bench/bench.py.
    #[command(hide = true)]
    BenchEngine {
        /// The model.
        model: String,
        /// The user message.
        #[arg(long)]
        prompt: String,
        /// Tokens to generate.
        #[arg(long, default_value_t = 200)]
        max_tokens: usize,
    },
    /// Benchmark helper: embed the texts of each JSON line read from stdin
    /// (`{"texts": [...]}`) with the embedding model in DIR, in this
    /// process; print one JSON line of timings each. Used by bench/embed.py.
    #[command(hide = true)]
    BenchEmbed {
        /// A sentence-transformers model directory.
        dir: PathBuf,
    },
    /// An engine process: one model in mistral.rs, driven by `kinko serve`
    /// over stdin and stdout (started by the server, not by people).
    #[command(hide = true)]
    EngineWorker {
        /// The model's directory in the store.
        #[arg(long)]
        dir: PathBuf,
        /// The GGUF file in it.
        #[arg(long)]
        file: String,
        /// Sequences served at once.
        #[arg(long, default_value_t = 16)]
        max_seqs: usize,
    },
    /// Chat with a model: one answer to PROMPT, or an interactive session.
    Run {
        /// The model.
        model: String,
        /// The prompt; without one, an interactive session starts.
        prompt: Vec<String>,
    },
}

/// Which engine answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// mistral.rs, embedded (production).
    Mistral,
    /// Deterministic scripted answers (tests, UI work).
    Fake,
}

/// The model the set-up installs (`scripts/default-model.sh`), and the chat
/// page's default.
pub const DEFAULT_MODEL: &str = "smollm2:135m";

/// Settings of `kinko serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "KINKO_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Inference engine.
    #[arg(long, env = "KINKO_ENGINE", value_enum, default_value = "mistral")]
    pub engine: EngineKind,
    /// Directory with the built UI (`pkg/` with the WASM bundle and CSS).
    #[arg(long, env = "KINKO_SITE_ROOT", default_value = "target/site")]
    pub site_root: PathBuf,
    /// `max_tokens` when a request names none.
    #[arg(long, env = "KINKO_DEFAULT_MAX_TOKENS", default_value_t = 512)]
    pub default_max_tokens: usize,
    /// Sampling temperature when a request names none (0 = greedy).
    #[arg(long, env = "KINKO_DEFAULT_TEMPERATURE", default_value_t = 0.7)]
    pub default_temperature: f64,
    /// Nucleus sampling mass when a request names none.
    #[arg(long, env = "KINKO_DEFAULT_TOP_P", default_value_t = 0.9)]
    pub default_top_p: f64,
    /// Top-k when a request names none.
    #[arg(long, env = "KINKO_DEFAULT_TOP_K", default_value_t = 40)]
    pub default_top_k: usize,
    /// Repetition penalty when a request names none (1 = off).
    #[arg(long, env = "KINKO_DEFAULT_REPEAT_PENALTY", default_value_t = 1.1)]
    pub default_repeat_penalty: f32,
    /// The largest `max_tokens` a request may ask for.
    #[arg(long, env = "KINKO_MAX_TOKENS_CAP", default_value_t = 4096)]
    pub max_tokens_cap: usize,
    /// Context size (`num_ctx`) when neither the request nor the model's
    /// preset sets one, capped by the model's own window; 0 uses the whole
    /// window. It grows to leave 1,024 prompt tokens beside a large
    /// `max_tokens`. Long prompts cost time on a CPU: see the README.
    #[arg(long, env = "KINKO_DEFAULT_NUM_CTX", default_value_t = 4096)]
    pub default_num_ctx: usize,
    /// Tokens kept free between the prompt plus answer and the context size.
    #[arg(long, env = "KINKO_CONTEXT_MARGIN", default_value_t = 16)]
    pub context_margin: usize,
    /// Send at most this many of the latest messages (the system prompt always goes).
    #[arg(long, env = "KINKO_MAX_HISTORY_MESSAGES")]
    pub max_history_messages: Option<usize>,
    /// Largest request body, in bytes.
    #[arg(long, env = "KINKO_BODY_LIMIT", default_value_t = 4 * 1024 * 1024)]
    pub body_limit: usize,
    /// Seconds to wait for the first token.
    #[arg(long, env = "KINKO_FIRST_TOKEN_TIMEOUT", default_value_t = 120.0)]
    pub first_token_timeout_secs: f64,
    /// Seconds to wait between two tokens.
    #[arg(long, env = "KINKO_TOKEN_TIMEOUT", default_value_t = 30.0)]
    pub token_timeout_secs: f64,
    /// Seconds a whole answer may take.
    #[arg(long, env = "KINKO_ANSWER_TIMEOUT", default_value_t = 600.0)]
    pub answer_timeout_secs: f64,
    /// Seconds between SSE keep-alive comments while the engine is silent.
    #[arg(long, env = "KINKO_KEEP_ALIVE", default_value_t = 10.0)]
    pub keep_alive_secs: f64,
    /// Seconds a write to a client may stay blocked before the connection is
    /// cut and its generation cancelled (a client that stopped reading).
    #[arg(long, env = "KINKO_CLIENT_WRITE_TIMEOUT", default_value_t = 30.0)]
    pub client_write_timeout_secs: f64,
    /// Seconds a client has to send a request's headers, counted from when
    /// the server starts waiting for them (a new or an idle kept-alive
    /// connection); then the connection is closed (slowloris).
    #[arg(long, env = "KINKO_HEADER_READ_TIMEOUT", default_value_t = 10.0)]
    pub header_read_timeout_secs: f64,
    /// Generations running at once per model.
    #[arg(long, env = "KINKO_MAX_CONCURRENT", default_value_t = 4)]
    pub max_concurrent_per_model: usize,
    /// Requests that may wait for a free slot per model; past it, 503 at once.
    #[arg(long, env = "KINKO_MAX_QUEUE", default_value_t = 16)]
    pub max_queue_per_model: usize,
    /// API key required from clients (Bearer) and browsers (login page).
    #[arg(long, env = "KINKO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// File holding the API key (first line).
    #[arg(long, env = "KINKO_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Serve a non-loopback address without an API key: anyone who can reach
    /// this machine can use it.
    #[arg(long, env = "KINKO_INSECURE_LAN_WITHOUT_API_KEY", value_parser = BoolishValueParser::new())]
    pub insecure_lan_without_api_key: bool,
    /// Extra origins allowed to call the API from a browser (comma-separated,
    /// e.g. `http://localhost:5173`); the server's own origin always is.
    #[arg(long, env = "KINKO_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Extra Host names accepted (comma-separated). A loopback-bound server
    /// accepts only localhost names and addresses otherwise (DNS rebinding).
    #[arg(long, env = "KINKO_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// How long a model stays loaded after its last answer (`5m`, `30s`,
    /// `0` for not at all, `-1` for ever); requests may ask for another.
    #[arg(long, env = "KINKO_MODEL_KEEP_ALIVE", default_value = "5m")]
    pub model_keep_alive: String,
    /// The most texts one embedding request may carry.
    #[arg(long, env = "KINKO_EMBED_MAX_INPUTS", default_value_t = 2048)]
    pub embed_max_inputs: usize,
    /// The most models held in memory at once; the least recently used goes.
    #[arg(long, env = "KINKO_MAX_LOADED_MODELS", default_value_t = 2)]
    pub max_loaded_models: usize,
    /// Where `hf.co/ORG/REPO:FILE` model names are downloaded from.
    #[arg(
        long,
        env = "KINKO_HF_ENDPOINT",
        default_value = "https://huggingface.co"
    )]
    pub hf_endpoint: String,
    /// The model the chat page starts a new conversation on (it falls back
    /// to the first installed model when this one is not installed).
    #[arg(long, env = "KINKO_DEFAULT_MODEL", default_value = DEFAULT_MODEL)]
    pub default_model: String,
    /// The largest model file a pull accepts, in bytes, whether or not the
    /// server announces a length (default 64 GiB).
    #[arg(long, env = "KINKO_MAX_PULL_BYTES", default_value_t = 64 << 30)]
    pub max_pull_bytes: u64,
    /// The largest model file a client may upload to `/api/blobs`, in
    /// bytes (default 64 GiB).
    #[arg(long, env = "KINKO_MAX_BLOB_BYTES", default_value_t = 64 << 30)]
    pub max_blob_bytes: u64,
    /// An upstream engine on another machine, `PREFIX=KIND:URL` with KIND
    /// `openai` (vLLM, llama.cpp's server: the URL ends in `/v1`) or
    /// `ollama` (Ollama, another kinko); repeat it for more, and give one
    /// prefix several URLs for replicas. Its models are offered as
    /// `PREFIX/model`; its key, if it needs one, is read from
    /// `KINKO_UPSTREAM_KEY_<PREFIX>` (`-` as `_`). In the variable: a
    /// comma-separated list.
    #[arg(long = "upstream", env = "KINKO_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<String>,
    /// Offer only the upstream models these name (`PREFIX/model`,
    /// comma-separated; a trailing `*` matches any end, so `lab/*` is all
    /// of `lab`'s). Without any, every upstream model is offered.
    #[arg(
        long = "upstream-allow",
        env = "KINKO_UPSTREAM_ALLOW",
        value_delimiter = ','
    )]
    pub upstream_allow: Vec<String>,
    /// The context window of an upstream model whose upstream reports none.
    #[arg(long, env = "KINKO_UPSTREAM_CONTEXT_LENGTH", default_value_t = 4096)]
    pub upstream_context_length: usize,
    /// Answers running at once per upstream (all its replicas together).
    #[arg(long, env = "KINKO_UPSTREAM_MAX_CONCURRENT", default_value_t = 16)]
    pub upstream_max_concurrent: usize,
    /// Requests that may wait per upstream; past it, 503 at once.
    #[arg(long, env = "KINKO_UPSTREAM_MAX_QUEUE", default_value_t = 64)]
    pub upstream_max_queue: usize,
    /// Seconds between two checks of an upstream replica in service (its
    /// model list, which is refreshed too). One out of service is checked
    /// after 1 s, then 2, 4, … up to 30 s.
    #[arg(long, env = "KINKO_UPSTREAM_CHECK_INTERVAL", default_value_t = 10.0)]
    pub upstream_check_interval_secs: f64,
    /// Seconds to wait to connect to an upstream replica before trying the next.
    #[arg(long, env = "KINKO_UPSTREAM_CONNECT_TIMEOUT", default_value_t = 3.0)]
    pub upstream_connect_timeout_secs: f64,
    /// Fake engine: the models it serves (comma-separated).
    #[arg(
        long,
        env = "KINKO_FAKE_MODELS",
        value_delimiter = ',',
        default_value = "fake:latest"
    )]
    pub fake_models: Vec<String>,
    /// Fake engine: milliseconds before each token.
    #[arg(long, env = "KINKO_FAKE_TOKEN_DELAY_MS", default_value_t = 0)]
    pub fake_token_delay_ms: u64,
    /// Fake engine: pad every answer to at least this many tokens.
    #[arg(long, env = "KINKO_FAKE_MIN_TOKENS", default_value_t = 0)]
    pub fake_min_tokens: usize,
    /// Fake engine: fail after this many tokens.
    #[arg(long, env = "KINKO_FAKE_FAIL_AFTER")]
    pub fake_fail_after: Option<usize>,
    /// Fake engine: the context length its model claims.
    #[arg(long, env = "KINKO_FAKE_CONTEXT", default_value_t = 4096)]
    pub fake_context: usize,
    /// Fake engine: the prompt speed it claims to have measured
    /// (milliseconds per prompt token).
    #[arg(long, env = "KINKO_FAKE_PROMPT_MS_PER_TOKEN")]
    pub fake_prompt_ms_per_token: Option<f64>,
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.001)).unwrap_or(Duration::from_secs(3600))
}

impl ServeConfig {
    /// Time allowed until the first token.
    pub fn first_token_timeout(&self) -> Duration {
        secs(self.first_token_timeout_secs)
    }
    /// Time allowed between two tokens.
    pub fn token_timeout(&self) -> Duration {
        secs(self.token_timeout_secs)
    }
    /// Time allowed for a whole answer.
    pub fn answer_timeout(&self) -> Duration {
        secs(self.answer_timeout_secs)
    }
    /// Interval of SSE keep-alive comments.
    pub fn keep_alive(&self) -> Duration {
        secs(self.keep_alive_secs)
    }
    /// How long a blocked write to a client may last.
    pub fn client_write_timeout(&self) -> Duration {
        secs(self.client_write_timeout_secs)
    }
    /// How long a client may take to send a request's headers.
    pub fn header_read_timeout(&self) -> Duration {
        secs(self.header_read_timeout_secs)
    }

    /// The upstreams of `--upstream` (or `KINKO_UPSTREAMS`), checked.
    pub fn upstream_specs(&self) -> Result<Vec<kinko_parse::upstream::UpstreamSpec>, String> {
        self.upstreams
            .iter()
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(kinko_parse::upstream::parse_spec)
            .collect()
    }

    /// How the upstreams are reached and checked.
    pub fn remote_settings(&self) -> crate::engine::remote::RemoteSettings {
        crate::engine::remote::RemoteSettings {
            connect_timeout: secs(self.upstream_connect_timeout_secs),
            check_interval: secs(self.upstream_check_interval_secs),
            max_backoff: Duration::from_secs(30),
            context_length: self.upstream_context_length.max(1),
            allow: self.upstream_allow.clone(),
        }
    }

    /// The API key from `--api-key` or `--api-key-file`, if any.
    pub fn resolve_api_key(&self) -> Result<Option<String>, String> {
        if let Some(key) = &self.api_key {
            return check_key(key.trim()).map(Some);
        }
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
            let key = text.lines().next().unwrap_or("").trim();
            return check_key(key).map(Some);
        }
        Ok(None)
    }
}

fn check_key(key: &str) -> Result<String, String> {
    if key.len() < 8 {
        return Err("the API key must be at least 8 characters".into());
    }
    Ok(key.to_string())
}

impl Default for ServeConfig {
    /// The defaults of `kinko serve` with no flags.
    fn default() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeConfig,
        }
        // Parsing no arguments cannot fail: every field has a default.
        Wrapper::try_parse_from(["kinko"])
            .map(|w| w.serve)
            .unwrap_or_else(|e| panic!("ServeConfig defaults do not parse: {e}"))
    }
}
