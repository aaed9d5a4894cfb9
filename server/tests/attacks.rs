//! The published record of Ollama's and llama.cpp's server, replayed against
//! the real `kinko` binary (issue 11): every shape that applies to kinko, as
//! an attacker on the LAN would send it, over raw HTTP. The server runs with
//! `RUST_BACKTRACE=1` (as on many developer machines) and an API key; each
//! answer must have the expected status, say what it should, stay one line,
//! carry no backtrace or Rust path, and leave the store as it was. The table
//! is printed (`--nocapture`) for the issue's closing note.

mod common;

use kinko::models::validate::craft::{string, Crafted};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kinko");
const KEY: &str = "attack-table-key-0123456789";
/// Every route that changes something or runs the model.
const MUTATING: [(&str, &str); 8] = [
    ("POST", "/api/create"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/copy"),
    ("POST", "/api/pull"),
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/api/chat/stream"),
];

struct Server {
    child: Child,
    addr: SocketAddr,
    home: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}

fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kinko-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(tag: &str, args: &[&str]) -> Server {
    let home = fresh_dir(tag);
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::fs::File::create(home.join("server.log")).unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .env("KINKO_HOME", &home)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .env("KINKO_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kinko");
    let server = Server { child, addr, home };
    let t = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "kinko did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// One raw request (it must ask for `Connection: close`); the status and
/// the body.
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A request with the key, the right Host, JSON, and `extra` headers.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, String) {
    request(addr, "POST", path, &[], body.to_string().as_bytes())
}

/// The message of an error body in any of the three shapes.
fn message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match &v["error"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => body.to_string(),
    }
}

fn installed(addr: SocketAddr) -> Vec<String> {
    let (status, body) = request(addr, "GET", "/api/tags", &[], b"");
    assert_eq!(status, 200, "{body}");
    common::model_names(&body)
}

/// One row of the table.
struct Row {
    record: &'static str,
    shape: String,
    status: u16,
    says: String,
}

/// Check an answer: the status, what it says, and that it leaks nothing.
fn check(
    rows: &mut Vec<Row>,
    record: &'static str,
    shape: impl Into<String>,
    got: (u16, String),
    status: u16,
    says: &str,
) {
    let shape = shape.into();
    let (got_status, body) = got;
    let text = message(&body);
    assert_eq!(got_status, status, "{record} / {shape}: {body}");
    assert!(
        text.contains(says),
        "{record} / {shape}: expected `{says}` in `{text}`"
    );
    for leak in ["::", "backtrace", "/rustc/", "src/", "\n", "panicked"] {
        assert!(
            !body.contains(leak) || leak == "::" && body.contains("[::"),
            "{record} / {shape}: `{leak}` in {body}"
        );
    }
    rows.push(Row {
        record,
        shape,
        status,
        says: text,
    });
}

/// A model file that passes validation but that no engine can load (llama
/// with only its embeddings): loading it fails inside candle, whose error carries a
/// backtrace under `RUST_BACKTRACE=1`.
fn unloadable(dir: &Path) -> PathBuf {
    let path = dir.join("unloadable.gguf");
    let bytes = Crafted::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.context_length", 512)
        .kv_u32("llama.embedding_length", 64)
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.attention.head_count", 2)
        .tensor("token_embd.weight", &[64, 32], 0, 0)
        .data(64 * 32 * 4)
        .bytes();
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn the_published_attacks_get_clear_refusals_and_leak_nothing() {
    let server = start("attacks", &["--body-limit", "1048576"]);
    let addr = server.addr;
    let files = server.home.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut rows = Vec::new();

    // A model to aim at: it validates, so it is listed, but cannot load.
    let broken = unloadable(&files);
    let (status, body) = post(
        addr,
        "/api/create",
        json!({"model": "broken", "from": broken, "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    let before = installed(addr);
    assert_eq!(before, ["broken:latest"]);

    // CVE-2025-63389 (no authentication on model management): without the
    // key every mutating route is refused.
    for (method, path) in MUTATING {
        let body = br#"{"model":"broken","source":"broken","destination":"stolen"}"#;
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let got = raw(addr, &[req.as_bytes(), body].concat());
        check(
            &mut rows,
            "CVE-2025-63389",
            format!("{method} {path} without the key"),
            got,
            401,
            "API key",
        );
    }

    // CVE-2024-37032 (Probllama): a digest or a name that is a path;
    // CVE-2024-39722: /api/push revealed files through path traversal.
    let digest63 = "a".repeat(63);
    let long_name = "x".repeat(300);
    let paths: Vec<(&str, &str, &str, &str, Value, u16, &str)> = vec![
        (
            "CVE-2024-37032",
            "pull with digest `sha256:../../../../etc/passwd`",
            "POST",
            "/api/pull",
            json!({"model": "http://127.0.0.1:9/m.gguf@sha256:../../../../etc/passwd"}),
            422,
            "invalid digest",
        ),
        (
            "CVE-2024-37032",
            "pull with a 63-digit digest",
            "POST",
            "/api/pull",
            json!({"model": format!("http://127.0.0.1:9/m.gguf@sha256:{digest63}")}),
            422,
            "invalid digest",
        ),
        (
            "CVE-2024-37032",
            "create named `../../../tmp/evil`",
            "POST",
            "/api/create",
            json!({"model": "../../../tmp/evil", "from": broken}),
            422,
            "invalid model name",
        ),
        (
            "CVE-2024-37032",
            "copy to `../escaped`",
            "POST",
            "/api/copy",
            json!({"source": "broken", "destination": "../escaped"}),
            422,
            "invalid model name",
        ),
        (
            "CVE-2024-37032",
            "copy to a name with NUL",
            "POST",
            "/api/copy",
            json!({"source": "broken", "destination": "a\u{0}b"}),
            422,
            "invalid model name",
        ),
        (
            "CVE-2024-37032",
            "copy to a 300-character name",
            "POST",
            "/api/copy",
            json!({"source": "broken", "destination": long_name}),
            422,
            "invalid model name",
        ),
        (
            "CVE-2024-37032",
            "delete `../../broken-latest`",
            "DELETE",
            "/api/delete",
            json!({"model": "../../broken-latest"}),
            404,
            "is not installed",
        ),
        (
            "CVE-2024-37032",
            "POST /api/blobs/sha256:../../etc/passwd",
            "POST",
            "/api/blobs/sha256:..%2F..%2Fetc%2Fpasswd",
            json!({}),
            400,
            "invalid digest",
        ),
        (
            "CVE-2024-37032",
            "create from `files` naming a path as its digest",
            "POST",
            "/api/create",
            json!({"model": "evil", "files": {"m.gguf": "sha256:../../../etc/passwd"}}),
            422,
            "invalid digest",
        ),
        (
            "CVE-2024-39722",
            "POST /api/push with a path",
            "POST",
            "/api/push",
            json!({"model": "../../../etc/passwd"}),
            404,
            "no route",
        ),
    ];
    for (record, shape, method, path, body, status, says) in paths {
        let got = request(addr, method, path, &[], body.to_string().as_bytes());
        check(&mut rows, record, shape, got, status, says);
    }

    // CVE-2024-39719 / 39721 / 45436: `FROM` a server-side path. Every kind
    // of file that is not a GGUF model gets the same answer, quickly.
    let fifo = files.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let text_file = files.join("notes.txt");
    std::fs::write(&text_file, "root:x:0:0:secret\n").unwrap();
    let zip = files.join("model.zip");
    std::fs::write(&zip, b"PK\x03\x04\x14\x00\x00\x00../../../../tmp/evil.gguf").unwrap();
    let empty = files.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let oracle: Vec<(&str, PathBuf)> = vec![
        ("CVE-2024-39719", PathBuf::from("/etc/shadow")),
        ("CVE-2024-39719", PathBuf::from("/etc/passwd")),
        ("CVE-2024-39719", text_file),
        ("CVE-2024-39719", PathBuf::from("/no/such/file.gguf")),
        ("CVE-2024-39719", PathBuf::from("/tmp")),
        ("CVE-2024-39719", empty),
        ("CVE-2024-39721", PathBuf::from("/dev/zero")),
        ("CVE-2024-39721", PathBuf::from("/dev/urandom")),
        ("CVE-2024-39721", PathBuf::from("/dev/null")),
        ("CVE-2024-39721", fifo),
        ("CVE-2024-45436", zip),
    ];
    for (record, path) in oracle {
        let t = Instant::now();
        let got = post(
            addr,
            "/api/create",
            json!({"model": "probe", "from": path, "stream": false}),
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{}: took {:?}",
            path.display(),
            t.elapsed()
        );
        let expected = format!(
            "`{}` is neither an installed model nor a GGUF file",
            path.display()
        );
        assert_eq!(
            message(&got.1),
            expected,
            "{record}: the same answer for every such path"
        );
        check(
            &mut rows,
            record,
            format!("create FROM {}", path.display()),
            got,
            422,
            &expected,
        );
    }

    // Crafted model files: each refused with one line saying what is wrong.
    let arch = || Crafted::new().kv_str("general.architecture", "llama");
    let mut huge_string = Vec::new();
    string(&mut huge_string, "general.name");
    huge_string.extend(8u32.to_le_bytes());
    huge_string.extend((1u64 << 60).to_le_bytes());
    let mut huge_array = Vec::new();
    string(&mut huge_array, "tokenizer.ggml.tokens");
    huge_array.extend(9u32.to_le_bytes());
    huge_array.extend(8u32.to_le_bytes());
    huge_array.extend((1u64 << 62).to_le_bytes());
    let mut lying_counts = arch();
    lying_counts.tensor_count = u64::MAX;
    let crafted: Vec<(&'static str, &str, Vec<u8>, &str)> = vec![
        (
            "CVE-2025-0315",
            "a metadata string of 2^60 bytes",
            Crafted::new().kv_raw(&huge_string).bytes(),
            "declares 1152921504606846976 bytes",
        ),
        (
            "CVE-2025-0315",
            "an array of 2^62 strings",
            Crafted::new().kv_raw(&huge_array).bytes(),
            "tokenizer.ggml.tokens",
        ),
        (
            "CVE-2025-0317",
            "general.alignment 0 (division by zero)",
            arch()
                .kv_u32("general.alignment", 0)
                .tensor("w", &[32], 0, 0)
                .data(128)
                .bytes(),
            "general.alignment 0 is not a power of two",
        ),
        (
            "CVE-2024-39720",
            "a header cut short",
            b"GGUF\x03\x00\x00\x00\x01".to_vec(),
            "runs past the end of the file",
        ),
        (
            "CVE-2024-39720",
            "2^64-1 tensors declared",
            lying_counts.bytes(),
            "tensors",
        ),
        (
            "CVE-2026-7482",
            "a tensor past the end of the file",
            arch()
                .tensor("blk.0.attn_q.weight", &[32, 32], 0, 0)
                .data(64)
                .bytes(),
            "tensor blk.0.attn_q.weight ends past the end of the file",
        ),
        (
            "llama.cpp GGUF overflow",
            "dimensions whose product overflows 64 bits",
            arch()
                .tensor("w", &[1 << 32, 1 << 32, 1 << 8], 0, 0)
                .data(64)
                .bytes(),
            "dimensions overflow 64 bits",
        ),
        (
            "llama.cpp GGUF overflow",
            "64 dimensions",
            arch().tensor("w", &[1; 64], 0, 0).data(64).bytes(),
            "declares 64 dimensions",
        ),
        (
            "llama.cpp GGUF overflow",
            "an unknown tensor type",
            arch().tensor("w", &[256], 19, 0).data(256).bytes(),
            "tensor w has unknown type 19",
        ),
        (
            "llama.cpp GGUF overflow",
            "a misaligned tensor offset",
            arch().tensor("w", &[32], 0, 3).data(256).bytes(),
            "is not aligned",
        ),
    ];
    for (record, shape, bytes, says) in crafted {
        let path = files.join("crafted.gguf");
        std::fs::write(&path, bytes).unwrap();
        let got = post(
            addr,
            "/api/create",
            json!({"model": "crafted", "from": path, "stream": false}),
        );
        check(
            &mut rows,
            record,
            format!("create from a GGUF with {shape}"),
            got,
            422,
            says,
        );
    }

    // CVE-2024-28224 (DNS rebinding) and its empty-Host gap.
    for host in [
        "attacker.example",
        "",
        ":PORT",
        "localhost.evil",
        "127.0.0.1.nip.io",
        "localhost:PORT.evil.example",
    ] {
        let host = host.replace("PORT", &addr.port().to_string());
        let req = format!("GET /api/tags HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n");
        check(
            &mut rows,
            "CVE-2024-28224",
            format!("Host `{host}`"),
            raw(addr, req.as_bytes()),
            403,
            "is not allowed",
        );
    }
    let upper = format!("GET /api/tags HTTP/1.1\r\nHost: LOCALHOST:{}\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n", addr.port());
    let (status, _) = raw(addr, upper.as_bytes());
    assert_eq!(
        status, 200,
        "host names are case-insensitive: LOCALHOST is localhost"
    );
    rows.push(Row {
        record: "CVE-2024-28224",
        shape: "Host `LOCALHOST:port` (upper case)".into(),
        status,
        says: "answered: the same host".into(),
    });

    // Cross-origin requests a web page can make without a preflight:
    // text/plain POSTs to every mutating route, and `Origin: null`.
    for (method, path) in MUTATING {
        let body =
            json!({"model": "broken", "source": "broken", "destination": "stolen", "from": broken})
                .to_string();
        for origin in ["http://attacker.example", "null"] {
            let got = request(
                addr,
                method,
                path,
                &[("Origin", origin), ("Content-Type", "text/plain")],
                body.as_bytes(),
            );
            check(
                &mut rows,
                "CSRF (CVE-2024-28224 class)",
                format!("text/plain {method} {path} from Origin `{origin}`"),
                got,
                403,
                "is not allowed",
            );
        }
    }

    // Request bodies: size, nesting, encoding.
    let t = Instant::now();
    let announced = format!("POST /api/chat HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 999999999999\r\nConnection: close\r\n\r\n");
    check(
        &mut rows,
        "body limit",
        "Content-Length: 999999999999 (no body sent)",
        raw(addr, announced.as_bytes()),
        413,
        "larger than the limit",
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "413 before the body: {:?}",
        t.elapsed()
    );
    let announced = announced.replace("/api/chat", "/v1/chat/completions");
    check(
        &mut rows,
        "body limit",
        "the same on /v1/chat/completions",
        raw(addr, announced.as_bytes()),
        413,
        "larger than the limit",
    );
    let deep = format!("{{\"model\":\"broken\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}],\"options\":{{\"x\":{}1{}}}}}", "[".repeat(100_000), "]".repeat(100_000));
    check(
        &mut rows,
        "deep JSON",
        "100,000 nested arrays in `options`",
        request(addr, "POST", "/api/chat", &[], deep.as_bytes()),
        400,
        "recursion limit",
    );
    // An unknown field is skipped without recursion, however deep.
    let deep = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    check(
        &mut rows,
        "deep JSON",
        "50,000 nested objects as the whole body",
        request(addr, "POST", "/v1/chat/completions", &[], deep.as_bytes()),
        422,
        "missing field `model`",
    );
    let lone = br#"{"model":"broken","messages":[{"role":"user","content":"\ud800"}]}"#;
    check(
        &mut rows,
        "encoding",
        "a lone UTF-16 surrogate (\\ud800)",
        request(addr, "POST", "/api/chat", &[], lone),
        400,
        "hex escape",
    );
    let bad_utf8 =
        b"{\"model\":\"broken\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}";
    check(
        &mut rows,
        "encoding",
        "invalid UTF-8 in a string",
        request(addr, "POST", "/api/chat", &[], bad_utf8),
        400,
        "invalid unicode code point",
    );
    let got = post(
        addr,
        "/api/chat",
        json!({"model": "bro\u{0}ken", "messages": [{"role": "user", "content": "hi"}]}),
    );
    check(
        &mut rows,
        "encoding",
        "a model name with NUL",
        got,
        404,
        "is not installed",
    );

    // Options out of range (llama.cpp's negative n_discard and friends).
    let chat = |options: Value| {
        post(
            addr,
            "/api/chat",
            json!({"model": "broken", "messages": [{"role": "user", "content": "hi"}], "options": options, "stream": false}),
        )
    };
    check(
        &mut rows,
        "llama.cpp n_discard",
        "num_ctx -1",
        chat(json!({"num_ctx": -1})),
        422,
        "option `num_ctx` has the wrong type",
    );
    check(
        &mut rows,
        "llama.cpp n_discard",
        "num_ctx 1e300",
        chat(json!({"num_ctx": 1e300})),
        422,
        "option `num_ctx` has the wrong type",
    );
    check(
        &mut rows,
        "llama.cpp n_discard",
        "num_predict 2^62",
        chat(json!({"num_predict": 1u64 << 62})),
        422,
        "max_tokens",
    );
    check(
        &mut rows,
        "llama.cpp n_discard",
        "top_k -1",
        chat(json!({"top_k": -1})),
        422,
        "option `top_k` has the wrong type",
    );
    let got = post(
        addr,
        "/v1/chat/completions",
        json!({"model": "broken", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}),
    );
    check(
        &mut rows,
        "llama.cpp n_discard",
        "OpenAI max_tokens -5",
        got,
        422,
        "max_tokens",
    );

    // Internals in errors: the model's load fails inside candle with a
    // backtrace in the error; the client sees one line.
    let got = chat(json!({}));
    check(
        &mut rows,
        "internals in errors",
        "chat with a model whose load fails (RUST_BACKTRACE=1)",
        got,
        503,
        "broken",
    );
    let log = std::fs::read_to_string(server.home.join("server.log")).unwrap_or_default();
    assert!(
        log.contains("Cannot find tensor info") && log.contains("Error::bt"),
        "the details, backtrace included, are in the server log: {log}"
    );

    // Nothing above changed the store, and the server is still up.
    assert_eq!(installed(addr), before);
    let leftovers: Vec<_> = std::fs::read_dir(server.home.join("models"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "broken-latest")
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing left in the store: {leftovers:?}"
    );

    println!("\n| record | shape | status | message |\n|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.record,
            r.shape.replace('|', "\\|"),
            r.status,
            r.says.replace('|', "\\|")
        );
    }
    println!("{} cases", rows.len());
}

/// Slowloris: 100 connections that never finish their headers do not delay
/// a real request, and the server closes them after its header timeout.
#[test]
fn silent_and_trickling_connections_neither_delay_requests_nor_stay() {
    let server = start(
        "slowloris",
        &["--engine", "fake", "--header-read-timeout-secs", "2"],
    );
    let addr = server.addr;
    let mut idle = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(addr).unwrap();
        if i % 2 == 0 {
            // Half of them start a request and never finish its headers.
            s.write_all(format!("GET /api/tags HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
                .unwrap();
        }
        idle.push(s);
    }
    let t = Instant::now();
    let got = request(addr, "GET", "/health", &[], b"");
    let took = t.elapsed();
    assert_eq!(got.0, 200, "{}", got.1);
    assert!(
        took < Duration::from_millis(500),
        "a real request took {took:?} beside 100 half-open connections"
    );
    // After the timeout each of them has been closed by the server.
    std::thread::sleep(Duration::from_millis(3000));
    let mut closed = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        let ended = match s.read(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        closed += usize::from(ended);
    }
    assert_eq!(
        closed, 100,
        "the server closes connections that send no whole request head in time"
    );
    println!("slowloris: a real request beside 100 half-open connections took {took:?}; all 100 closed after the 2 s header timeout");
}
