//! Tool calling with the real engine: the default model's weights with a
//! chat template that renders `tools` (SmolLM2's own does not, so the
//! default model is refused tools; see `fields.rs`). Made here by copying
//! its GGUF with another `tokenizer.chat_template`. The tools reach the
//! prompt, and calls come back from mistral.rs in Ollama's and OpenAI's
//! shapes; `tool_choice` naming a function (OpenAI) and a `format` of the
//! call's shape (Ollama) hold the 135M model to a call, sampled.

mod common;

use candle_core::quantized::gguf_file::{self, Value as GgufValue};
use candle_core::quantized::QTensor;
use candle_core::Device;
use kinko::config::ServeConfig;
use kinko::engine::mistral::MistralEngine;
use kinko::engine::runner::WorkerSpec;
use kinko::metrics::Metrics;
use kinko::models::ModelStore;
use kinko::AppState;
use serde_json::{json, Value};
use std::path::Path;

const DEFAULT_MODEL: &str = "smollm2:135m";
const TOOL_MODEL: &str = "smollm2-tools:135m";

/// ChatML, as SmolLM2's template, with the functions in a system turn.
const TOOLS_TEMPLATE: &str = "{%- if tools %}<|im_start|>system\nYou can call functions. \
To call one, answer with only a JSON object {\"name\": <function name>, \"arguments\": <arguments object>}.\n\
Functions:\n{%- for tool in tools %}\n{{ tool.function | tojson }}\n{%- endfor %}<|im_end|>\n{% endif %}\
{%- for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}\
{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Copy the GGUF at `source` to `dest` with `template` as its chat template.
fn with_template(source: &Path, dest: &Path, template: &str) {
    let mut reader = std::io::BufReader::new(std::fs::File::open(source).unwrap());
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| {
            let t = content.tensor(&mut reader, n, &Device::Cpu).unwrap();
            (n.clone(), t)
        })
        .collect();
    let mut metadata: Vec<(String, GgufValue)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.retain(|(k, _)| k != "tokenizer.chat_template");
    metadata.push((
        "tokenizer.chat_template".into(),
        GgufValue::String(template.into()),
    ));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let meta: Vec<(&str, &GgufValue)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(dest).unwrap());
    gguf_file::write(&mut w, &meta, &tensor_refs).unwrap();
}

fn weather() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]},
    }}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_come_back_from_the_real_engine() {
    let installed = ModelStore::new(ModelStore::default_home());
    let base = installed.get(DEFAULT_MODEL).unwrap_or_else(|| {
        panic!(
            "the default model {DEFAULT_MODEL} is not installed in {}: run `scripts/setup.sh`",
            ModelStore::default_home().display()
        )
    });
    let home = common::temp_dir("tools-real");
    let gguf = home.join("smollm2-tools.gguf");
    with_template(&base.gguf_path(), &gguf, TOOLS_TEMPLATE);
    let store = ModelStore::new(&home);
    store.import(TOOL_MODEL, &gguf, None).unwrap();
    // The default model beside it, to compare capabilities.
    store
        .import(DEFAULT_MODEL, &base.gguf_path(), None)
        .unwrap();
    let metrics = Metrics::new();
    let engine = std::sync::Arc::new(
        MistralEngine::new(store.clone(), metrics.clone())
            .with_worker(WorkerSpec::program(env!("CARGO_BIN_EXE_kinko"))),
    );
    let state = AppState::new(engine, "mistral", metrics, ServeConfig::default()).with_store(store);
    let addr = common::spawn_server(state).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = http.post(format!("http://{addr}{path}")).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    };

    // Capabilities come from the templates.
    let (_, show) = post("/api/show", json!({"model": TOOL_MODEL})).await;
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));
    assert!(show["template"].as_str().unwrap().contains("if tools"));
    let (_, show) = post("/api/show", json!({"model": DEFAULT_MODEL})).await;
    assert_eq!(show["capabilities"], json!(["completion"]));

    // The tools reach the prompt: the same question costs more prompt
    // tokens with them.
    let question = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let plain = json!({"model": TOOL_MODEL, "messages": question, "stream": false,
                       "options": {"temperature": 0, "num_predict": 8}});
    let (status, without) = post("/api/chat", plain.clone()).await;
    assert_eq!(status, 200, "{without}");
    let mut offered = plain.clone();
    offered["tools"] = weather();
    let (status, with) = post("/api/chat", offered).await;
    assert_eq!(status, 200, "{with}");
    let (a, b) = (
        without["prompt_eval_count"].as_u64().unwrap(),
        with["prompt_eval_count"].as_u64().unwrap(),
    );
    assert!(b > a + 40, "with tools {b} prompt tokens, without {a}");
    println!("prompt tokens: {a} without the tool, {b} with it");

    // OpenAI: tool_choice names the function; sampled, five times.
    let mut seen = Vec::new();
    for run in 0..5 {
        let body = json!({"model": TOOL_MODEL, "messages": question, "tools": weather(),
                          "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                          "temperature": 0.8, "max_tokens": 64});
        let (status, v) = post("/v1/chat/completions", body).await;
        assert_eq!(status, 200, "run {run}: {v}");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "run {run}: {v}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather", "run {run}: {v}");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("run {run}: arguments are JSON: {e}: {v}"));
        assert!(args["city"].is_string(), "run {run}: {args}");
        seen.push(args["city"].clone());
    }
    println!("OpenAI tool calls, cities: {seen:?}");

    // The same, streamed: the call arrives as one delta.
    let body = json!({"model": TOOL_MODEL, "messages": question, "tools": weather(), "stream": true,
                      "tool_choice": "required", "temperature": 0, "max_tokens": 64});
    let text = http
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chunks = common::openai_chunks(&text);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Ollama: a `format` of the call's shape; the call comes back in
    // `message.tool_calls` with its arguments as an object.
    let call_shape = json!({"type": "object", "properties": {
        "name": {"const": "get_weather"},
        "arguments": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]}},
        "required": ["name", "arguments"]});
    for stream in [false, true] {
        let body = json!({"model": TOOL_MODEL, "messages": question, "tools": weather(),
                          "format": call_shape, "stream": stream,
                          "options": {"temperature": 0.8, "num_predict": 64}});
        let resp = http
            .post(format!("http://{addr}/api/chat"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let calls: Vec<&Value> = lines
            .iter()
            .filter_map(|l| l["message"]["tool_calls"].as_array())
            .flatten()
            .collect();
        assert_eq!(calls.len(), 1, "stream {stream}: {text}");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert!(
            calls[0]["function"]["arguments"]["city"].is_string(),
            "{text}"
        );
        assert_eq!(lines.last().unwrap()["done"], true);
    }

    // The default model's template renders no tools: refused, not dropped.
    let body = json!({"model": DEFAULT_MODEL, "messages": question, "tools": weather()});
    let (status, v) = post("/api/chat", body).await;
    assert_eq!(status, 400);
    assert_eq!(v, json!({"error": "smollm2:135m does not support tools"}));
    // Three copies of the model: not left in the temporary directory.
    let _ = std::fs::remove_dir_all(&home);
}
