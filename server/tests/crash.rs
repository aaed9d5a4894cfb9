//! Crash safety (issue 11): `kill -9` of the CLI or the server at several
//! points of import, create, pull and copy. On restart no half model is
//! listed, temporary files are cleaned up, and every manifest is valid (its
//! file is there, with the size and digest it names). A partial download is
//! kept only when it can be resumed, and then it is.

mod common;

use common::free_port;

use kinko::models::validate::craft::Crafted;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kinko");

/// A model file big enough that copying and hashing it takes a while here
/// (≈ 200 MB), so that kills land in the middle.
fn big_model(dir: &Path) -> PathBuf {
    let path = dir.join("big.gguf");
    let header = Crafted::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.context_length", 256)
        .tensor("token_embd.weight", &[1024, 51200], 0, 0)
        .bytes();
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&header).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..200 {
        f.write_all(&chunk).unwrap();
    }
    path
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(home: &Path) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--addr", &addr.to_string()])
            .env("KINKO_HOME", home)
            .env_remove("KINKO_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "kinko did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, addr }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send a POST and do not wait for the answer.
    fn send(&self, path: &str, body: Value) -> TcpStream {
        self.send_as("POST", path, body)
    }

    /// Send a request and do not wait for the answer.
    fn send_as(&self, method: &str, path: &str, body: Value) -> TcpStream {
        let body = body.to_string();
        let mut s = TcpStream::connect(self.addr).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        s
    }

    fn tags(&self) -> Vec<String> {
        let mut s = TcpStream::connect(self.addr).unwrap();
        write!(
            s,
            "GET /api/tags HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        common::model_names(out.split_once("\r\n\r\n").unwrap().1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", kinko::models::hex(&h.finalize()))
}

/// What was in the store's root, besides model directories.
fn leftovers(home: &Path) -> Vec<String> {
    let root = home.join("models");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == ".downloads" {
            for d in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                found.push(format!(".downloads/{}", d.file_name().to_string_lossy()));
            }
        } else if name.starts_with('.') {
            found.push(name);
        } else if e.path().join("manifest.json.tmp").exists() {
            found.push(format!("{name}/manifest.json.tmp"));
        }
    }
    found.sort();
    found
}

/// Restart the server on `home` and check the store: what is listed is
/// whole, and nothing temporary is left (a resumable download may stay
/// when `resumable_ok`). Answers the models listed.
fn restart_and_check(home: &Path, resumable_ok: bool) -> Vec<String> {
    let server = Server::start(home);
    let listed = server.tags();
    for name in &listed {
        let dir = home.join("models").join(name.replace(':', "-"));
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        let file = dir.join(manifest["file"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            manifest["size"].as_u64().unwrap(),
            "{name}: size"
        );
        assert_eq!(
            sha256(&file),
            manifest["digest"].as_str().unwrap(),
            "{name}: digest"
        );
    }
    let left: Vec<String> = leftovers(home)
        .into_iter()
        .filter(|l| !(resumable_ok && l.starts_with(".downloads/")))
        .collect();
    assert!(left.is_empty(), "left after a restart: {left:?}");
    server.kill9();
    listed
}

/// Serves `file` over HTTP at about 100 MB/s, with its length.
fn slow_file_server(file: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let file = file.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut start = 0u64;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(range) = lower.strip_prefix("range: bytes=") {
                        start = range.trim().trim_end_matches('-').parse().unwrap_or(0);
                    }
                }
                let data = std::fs::read(&file).unwrap();
                let body = &data[start as usize..];
                let status = if start > 0 {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for chunk in body.chunks(1 << 20) {
                    if conn.write_all(chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    });
    addr
}

fn fresh(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kinko-crash-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const KILL_AFTER_MS: [u64; 5] = [5, 60, 200, 500, 1200];

#[test]
fn kill_9_during_import_create_pull_and_copy_leaves_a_valid_store() {
    let work = fresh("work");
    let model = big_model(&work);
    let digest = sha256(&model);
    let mut report = Vec::new();
    let mut caught_midway = 0;

    // The CLI's import, killed.
    for ms in KILL_AFTER_MS {
        let home = fresh(&format!("import-{ms}"));
        let mut cli = Command::new(BIN)
            .args(["import", "big:1"])
            .arg(&model)
            .env("KINKO_HOME", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = cli.kill();
        let _ = cli.wait();
        let before = leftovers(&home);
        caught_midway += usize::from(!before.is_empty());
        let listed = restart_and_check(&home, false);
        assert!(listed.is_empty() || listed == ["big:1"], "{listed:?}");
        report.push(format!(
            "import, kill -9 after {ms} ms: left {before:?}; after restart listed {listed:?}"
        ));
        let _ = std::fs::remove_dir_all(&home);
    }

    // The server's create (from a path) and copy, killed.
    for ms in KILL_AFTER_MS {
        let home = fresh(&format!("create-{ms}"));
        let server = Server::start(&home);
        let _pending = server.send(
            "/api/create",
            json!({"model": "big:1", "from": model, "stream": false}),
        );
        std::thread::sleep(Duration::from_millis(ms));
        server.kill9();
        let before = leftovers(&home);
        caught_midway += usize::from(!before.is_empty());
        let listed = restart_and_check(&home, false);
        assert!(listed.is_empty() || listed == ["big:1"], "{listed:?}");
        report.push(format!(
            "create, kill -9 after {ms} ms: left {before:?}; after restart listed {listed:?}"
        ));

        // Copy (and replace a model of that name) from what is there.
        let server = Server::start(&home);
        let mut done = server.send(
            "/api/create",
            json!({"model": "big:1", "from": model, "stream": false}),
        );
        let mut answer = String::new();
        done.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut done = server.send(
            "/api/copy",
            json!({"source": "big:1", "destination": "copy:1"}),
        );
        done.read_to_string(&mut answer).unwrap();
        let _pending = server.send(
            "/api/copy",
            json!({"source": "big:1", "destination": "copy:1"}),
        );
        let _pending2 = server.send_as("DELETE", "/api/delete", json!({"model": "big:1"}));
        std::thread::sleep(Duration::from_millis(ms / 10));
        server.kill9();
        let before = leftovers(&home);
        let listed = restart_and_check(&home, false);
        assert!(
            listed.contains(&"copy:1".to_string()),
            "a copy replaced in a crash is still there: {listed:?}"
        );
        report.push(format!("copy over a copy + delete, kill -9 after {} ms: left {before:?}; after restart listed {listed:?}", ms / 10));
        let _ = std::fs::remove_dir_all(&home);
    }

    // The server's pull, killed: without a digest the partial file cannot
    // be resumed and goes; with one it stays and the next pull resumes it.
    let source = slow_file_server(model.clone());
    for (ms, with_digest) in [(300, false), (900, true), (1500, false)] {
        let home = fresh(&format!("pull-{ms}"));
        let server = Server::start(&home);
        let spec = if with_digest {
            format!("http://{source}/big.gguf@{digest}")
        } else {
            format!("http://{source}/big.gguf")
        };
        let _pending = server.send(
            "/api/pull",
            json!({"model": spec, "name": "pulled:1", "stream": false}),
        );
        std::thread::sleep(Duration::from_millis(ms));
        server.kill9();
        let before = leftovers(&home);
        caught_midway += usize::from(!before.is_empty());
        let listed = restart_and_check(&home, with_digest);
        let kept = leftovers(&home);
        if with_digest {
            assert!(
                kept.iter().any(|l| l.ends_with(".partial")),
                "a resumable download stays: {kept:?}"
            );
            let server = Server::start(&home);
            let mut again = server.send(
                "/api/pull",
                json!({"model": spec, "name": "pulled:1", "stream": false}),
            );
            let mut answer = String::new();
            again.read_to_string(&mut answer).unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "the pull resumes: {answer}"
            );
            server.kill9();
            assert_eq!(restart_and_check(&home, false), ["pulled:1"]);
            assert!(leftovers(&home).is_empty());
        } else {
            assert!(kept.is_empty(), "{kept:?}");
        }
        report.push(format!("pull (digest known: {with_digest}), kill -9 after {ms} ms: left {before:?}; after restart listed {listed:?}, kept {kept:?}"));
        let _ = std::fs::remove_dir_all(&home);
    }

    for line in &report {
        println!("{line}");
    }
    assert!(
        caught_midway >= 3,
        "at least a few kills landed mid-way ({caught_midway}):\n{}",
        report.join("\n")
    );
    let _ = std::fs::remove_dir_all(&work);
}
