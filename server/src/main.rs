//! The `kinko` binary: parse the command line, start tracing, and run the
//! chosen command.

use anyhow::Context;
use clap::Parser;
use kinko::config::{Cli, Command, EngineKind, ServeConfig};
use kinko::engine::fake::{FakeConfig, FakeEngine};
use kinko::engine::local::LocalModel;
use kinko::engine::mistral::MistralEngine;
use kinko::engine::runner::WorkerSpec;
use kinko::engine::{ChatEngine, KeepAlive};
use kinko::metrics::Metrics;
use kinko::models::quantize::Target;
use kinko::models::{ImportOutcome, ModelStore};
use kinko::net::GuardedListener;
use kinko::AppState;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    // Nothing is ever fetched from a model hub.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                EnvFilter::new("kinko=info,tower_http=warn,mistralrs_core=error")
            }),
        )
        .init();
    let cli = Cli::parse();
    // Only the commands that compute here need the compute threads; the
    // client commands talk to a server.
    if matches!(
        cli.command,
        Command::Serve(_)
            | Command::Import { .. }
            | Command::BenchEngine { .. }
            | Command::BenchEmbed { .. }
            | Command::EngineWorker { .. }
    ) {
        kinko::threads::configure(cli.threads, !cli.no_pin)?;
    }
    let home = cli.home.clone().unwrap_or_else(ModelStore::default_home);
    let store = ModelStore::new(&home);
    if matches!(cli.command, Command::Serve(_) | Command::Import { .. }) {
        // What a killed process left half done.
        for line in store.recover() {
            tracing::info!("model store clean-up: {line}");
        }
    }
    match cli.command {
        Command::Serve(config) => {
            let worker = WorkerSpec {
                threads: cli.threads,
                no_pin: cli.no_pin,
                ..WorkerSpec::default()
            };
            serve(*config, store, worker).await
        }
        Command::EngineWorker {
            dir,
            file,
            max_seqs,
        } => kinko::engine::worker::run(dir, file, max_seqs).await,
        Command::Import {
            name,
            path,
            quantize,
        } => {
            let target = match quantize.as_deref() {
                None => None,
                Some(q) => Some(
                    Target::parse(q)
                        .with_context(|| format!("--quantize must be q8_0 or q4_0, not `{q}`"))?,
                ),
            };
            let embedding = path.is_dir();
            if embedding && target.is_some() {
                anyhow::bail!("--quantize applies to GGUF chat models, not embedding models");
            }
            let outcome = tokio::task::spawn_blocking(move || {
                if embedding {
                    store.import_embedding(&name, &path)
                } else {
                    store.import(&name, &path, target)
                }
            })
            .await
            .context("import task")??;
            match outcome {
                ImportOutcome::Imported(m) if embedding => println!(
                    "imported {} (embedding model: {}, {}, {} bytes, {} dimensions, reads {} tokens)",
                    m.name,
                    m.architecture,
                    m.quantization,
                    m.size,
                    m.embedding_length.unwrap_or(0),
                    m.context_length
                ),
                ImportOutcome::Imported(m) => println!(
                    "imported {} ({}, {}, {} bytes, context {})",
                    m.name, m.architecture, m.quantization, m.size, m.context_length
                ),
                ImportOutcome::AlreadyInstalled(m) => {
                    println!("{} is already installed ({})", m.name, m.digest)
                }
            }
            Ok(())
        }
        Command::BenchEngine {
            model,
            prompt,
            max_tokens,
        } => bench_engine(store, &model, &prompt, max_tokens).await,
        Command::BenchEmbed { dir } => bench_embed(&dir),
        command => {
            let key = std::env::var("KINKO_API_KEY")
                .ok()
                .filter(|k| !k.is_empty());
            let client = kinko::cli::Client::new(&cli.host, key);
            match command {
                Command::List => client.list().await,
                Command::Show { model, modelfile } => client.show(&model, modelfile).await,
                Command::Ps => client.ps().await,
                Command::Rm { models } => client.rm(&models).await,
                Command::Cp {
                    source,
                    destination,
                } => client.cp(&source, &destination).await,
                Command::Create {
                    name,
                    file,
                    quantize,
                } => client.create(&name, &file, quantize.as_deref()).await,
                Command::Pull {
                    spec,
                    name,
                    quantize,
                } => {
                    client
                        .pull(&spec, name.as_deref(), quantize.as_deref())
                        .await
                }
                Command::Run { model, prompt } => {
                    let prompt = (!prompt.is_empty()).then(|| prompt.join(" "));
                    client.run(&model, prompt).await
                }
                Command::Serve(_)
                | Command::Import { .. }
                | Command::BenchEngine { .. }
                | Command::BenchEmbed { .. }
                | Command::EngineWorker { .. } => Ok(()),
            }
        }
    }
}

/// The bare engine as kinko drives it, in this process, without HTTP or an
/// engine process: one generation per line read from stdin, one JSON line
/// of timings out.
async fn bench_engine(
    store: ModelStore,
    model: &str,
    prompt: &str,
    max_tokens: usize,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use kinko::engine::{EngineEvent, Sampling};
    use tokio::io::AsyncBufReadExt;
    let installed = store
        .get(model)
        .with_context(|| format!("model `{model}` is not installed"))?;
    let engine = LocalModel::load(&installed.dir, &installed.manifest.file, 16)
        .await
        .map_err(anyhow::Error::msg)?;
    let messages = vec![app::api::ChatMessage::new(app::api::Role::User, prompt)];
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    println!("{}", serde_json::json!({"ready": true}));
    while let Some(_cmd) = lines.next_line().await? {
        let started = std::time::Instant::now();
        let prompt_tokens = engine.count_tokens(&messages).await?;
        let mut stream = engine
            .stream(&messages, &Sampling::greedy(max_tokens))
            .await?;
        let mut first = None;
        let mut tokens = 0usize;
        while let Some(ev) = stream.next().await {
            match ev? {
                EngineEvent::Delta(_) => {
                    first.get_or_insert_with(std::time::Instant::now);
                }
                EngineEvent::Timings(_) | EngineEvent::ToolCalls(_) => {}
                EngineEvent::Done { usage, .. } => {
                    tokens = usage.completion_tokens;
                    break;
                }
            }
        }
        let end = std::time::Instant::now();
        let first = first.unwrap_or(end);
        let decode = end.duration_since(first).as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "prompt_tokens": prompt_tokens,
                "completion_tokens": tokens,
                "ttft_ms": first.duration_since(started).as_secs_f64() * 1000.0,
                "decode_tok_s": if decode > 0.0 && tokens > 1 { (tokens - 1) as f64 / decode } else { 0.0 },
            })
        );
    }
    Ok(())
}

/// The embedding model without HTTP: one JSON line of texts in, one line of
/// timings out.
fn bench_embed(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::BufRead;
    #[derive(serde::Deserialize)]
    struct Job {
        texts: Vec<String>,
    }
    let started = std::time::Instant::now();
    let embedder = kinko::embed::Embedder::load(dir)?;
    println!(
        "{}",
        serde_json::json!({"ready": true, "load_ms": started.elapsed().as_secs_f64() * 1000.0})
    );
    for line in std::io::stdin().lock().lines() {
        let job: Job = serde_json::from_str(&line?)?;
        let t = std::time::Instant::now();
        let out = embedder.embed(&job.texts, true)?;
        println!(
            "{}",
            serde_json::json!({"seconds": t.elapsed().as_secs_f64(), "tokens": out.tokens,
                               "first": out.vectors.first().map(|v| v[..4].to_vec())})
        );
    }
    Ok(())
}

async fn serve(
    mut config: ServeConfig,
    store: ModelStore,
    worker: WorkerSpec,
) -> anyhow::Result<()> {
    // Secure by default: a non-loopback address needs an API key.
    config.api_key = config.resolve_api_key().map_err(anyhow::Error::msg)?;
    config.api_key_file = None;
    if !config.addr.ip().is_loopback() && config.api_key.is_none() {
        if !config.insecure_lan_without_api_key {
            anyhow::bail!(
                "refusing to serve {} without an API key: anyone on the network could use it.\n\
                 Set one with --api-key, KINKO_API_KEY or --api-key-file, or bind 127.0.0.1.\n\
                 (To run open anyway, pass --insecure-lan-without-api-key.)",
                config.addr
            );
        }
        tracing::warn!(
            "SERVING {} WITHOUT AN API KEY: anyone who can reach this machine can use kinko",
            config.addr
        );
    }
    let metrics = Metrics::new();
    let served_store = (config.engine == EngineKind::Mistral).then(|| store.clone());
    let keep_alive = KeepAlive::parse(&serde_json::Value::String(config.model_keep_alive.clone()))
        .with_context(|| {
            format!(
                "--model-keep-alive `{}` is not a duration like 5m",
                config.model_keep_alive
            )
        })?;
    let (engine, name): (Arc<dyn ChatEngine>, &'static str) = match config.engine {
        EngineKind::Mistral => (
            Arc::new(
                MistralEngine::with_limits(
                    store,
                    metrics.clone(),
                    keep_alive,
                    config.max_loaded_models,
                )
                .with_worker(worker),
            ),
            "mistral",
        ),
        EngineKind::Fake => (
            Arc::new(FakeEngine::new(
                FakeConfig {
                    token_delay: Duration::from_millis(config.fake_token_delay_ms),
                    min_tokens: config.fake_min_tokens,
                    fail_after: config.fake_fail_after,
                    context_length: config.fake_context,
                    models: config.fake_models.clone(),
                    prompt_cost: config
                        .fake_prompt_ms_per_token
                        .map(|ms| app::api::PromptCost {
                            per_token: ms / 1000.0,
                            per_token_squared: 0.0,
                            samples: 1,
                            // It claims to have measured whole windows.
                            longest: config.fake_context,
                        }),
                },
                metrics.clone(),
            )),
            "fake",
        ),
    };
    // Upstream engines on other machines, beside the local one.
    let specs = config.upstream_specs().map_err(anyhow::Error::msg)?;
    let upstreams = if specs.is_empty() {
        None
    } else {
        let upstreams = kinko::engine::remote::Upstreams::new(
            specs,
            |variable| std::env::var(variable).ok(),
            config.remote_settings(),
            metrics.clone(),
        )?;
        upstreams.start().await;
        Some(upstreams)
    };
    let engine: Arc<dyn ChatEngine> = match &upstreams {
        Some(u) => Arc::new(kinko::engine::remote::WithUpstreams::new(engine, u.clone())),
        None => engine,
    };
    let addr = config.addr;
    if !config.site_root.join("pkg").is_dir() {
        tracing::warn!(site_root = %config.site_root.display(), "no UI bundle found (build it with scripts/build-ui.sh, or `cargo leptos build --release`); the API still works");
    }
    let mut state = AppState::new(engine, name, metrics, config);
    if let Some(store) = served_store {
        state = state.with_store(store.clone()).with_embeddings(
            kinko::engine::embeddings::Embeddings::new(store, keep_alive),
        );
    }
    if let Some(upstreams) = upstreams {
        state = state.with_upstreams(upstreams);
    }
    let app = kinko::router(state.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        api_key = state.security.requires_key(),
        "kinko listening on http://{}",
        listener.local_addr()?
    );
    let listener = GuardedListener::new(listener, state.config.client_write_timeout());
    let header_read_timeout = state.config.header_read_timeout();
    kinko::net::serve(listener, app, header_read_timeout, async move {
        shutdown_signal().await;
        // Open answers get a final event and end; then the server exits.
        state.begin_shutdown();
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            tracing::warn!("connections still open 5 s after the shutdown signal; exiting");
            std::process::exit(0);
        });
    })
    .await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
