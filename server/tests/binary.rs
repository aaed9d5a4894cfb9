//! Tests of the real `kinko` binary: refusing an open LAN bind, graceful
//! shutdown on SIGTERM, and LAN access with an API key over a real
//! non-loopback address inside a network namespace the test creates.

mod common;

use common::free_port;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kinko");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str], health_url: &str, netns: Option<&str>) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .env(
            "KINKO_HOME",
            std::env::temp_dir().join("kinko-binary-test-home"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("start kinko");
    let server = Server(child);
    let t = Instant::now();
    loop {
        let mut probe = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "curl"]);
                c
            }
            None => Command::new("curl"),
        };
        let ok = probe
            .args(["-sf", "-o", "/dev/null", health_url])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return server;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "kinko did not come up at {health_url}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_lan_bind_without_a_key_is_refused() {
    let out = Command::new(BIN)
        .args(["serve", "--engine", "fake", "--addr", "0.0.0.0:0"])
        .env_remove("KINKO_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without an API key") && err.contains("--insecure-lan-without-api-key"),
        "{err}"
    );
}

#[test]
fn sigterm_ends_open_streams_with_a_final_event_and_exits() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = start(
        &[
            "--engine",
            "fake",
            "--addr",
            &addr,
            "--fake-token-delay-ms",
            "20",
            "--fake-min-tokens",
            "100000",
            "--default-max-tokens",
            "3000",
        ],
        &format!("http://{addr}/health"),
        None,
    );
    let mut curl = Command::new("curl")
        .args([
            "-sN",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"model":"fake:latest","messages":[{"role":"user","content":"go"}]}"#,
        ])
        .arg(format!("http://{addr}/api/chat/stream"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let mut deltas = 0;
    while deltas < 5 {
        let line = lines.next().expect("stream ended early").unwrap();
        if line == "event: delta" {
            deltas += 1;
        }
    }
    let t = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let text = rest.join("\n");
    assert!(
        text.contains("event: error\ndata: {\"code\":\"shutting_down\""),
        "{text}"
    );
    assert!(
        text.contains("event: done\ndata: {\"finish_reason\":\"cancelled\""),
        "{text}"
    );
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "kinko did not exit within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("exited {} ms after SIGTERM", t.elapsed().as_millis());
    let _ = curl.wait();
}

/// A network namespace with a veth pair: the server listens on the host
/// side, the client runs inside the namespace. Removed on drop.
struct TestLan {
    ns: String,
    host_ip: String,
}

impl TestLan {
    fn create() -> Self {
        let id = std::process::id() % 200 + 20;
        let ns = format!("kinko-lan-{}", std::process::id());
        let (a, b) = (format!("kla{id}"), format!("klb{id}"));
        let host_ip = format!("10.231.{id}.1");
        let peer_ip = format!("10.231.{id}.2");
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), ns.clone()],
            vec![
                "link".into(),
                "add".into(),
                a.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                b.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                b.clone(),
                "netns".into(),
                ns.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{host_ip}/30"),
                "dev".into(),
                a.clone(),
            ],
            vec!["link".into(), "set".into(), a.clone(), "up".into()],
            vec![
                "-n".into(),
                ns.clone(),
                "addr".into(),
                "add".into(),
                format!("{peer_ip}/30"),
                "dev".into(),
                b.clone(),
            ],
            vec![
                "-n".into(),
                ns.clone(),
                "link".into(),
                "set".into(),
                b,
                "up".into(),
            ],
            vec![
                "-n".into(),
                ns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        let lan = TestLan { ns, host_ip };
        for step in steps {
            let out = Command::new("ip").args(&step).output().unwrap_or_else(|e| {
                panic!("this test needs iproute2's `ip` (apt-get install iproute2): {e}")
            });
            assert!(
                out.status.success(),
                "`ip {}` failed (the LAN test needs root to create a network namespace): {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        lan
    }

    /// Run curl inside the namespace; returns (status code, body).
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "curl",
                "-s",
                "-w",
                "\n%{http_code}",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for TestLan {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn lan_clients_need_the_key_over_a_real_non_loopback_address() {
    let lan = TestLan::create();
    let port = free_port();
    let addr = format!("{}:{port}", lan.host_ip);
    let base = format!("http://{addr}");
    let _server = start(
        &[
            "--engine",
            "fake",
            "--addr",
            &addr,
            "--api-key",
            "lan-secret-123",
        ],
        &format!("{base}/health"),
        Some(&lan.ns),
    );
    // No key, a wrong key: 401 with a JSON error.
    let (code, body) = lan.curl(&[&format!("{base}/api/models")]);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    let (code, _) = lan.curl(&[
        "-H",
        "Authorization: Bearer wrong-key-456",
        &format!("{base}/api/models"),
    ]);
    assert_eq!(code, 401);
    // The right key as a Bearer token.
    let (code, body) = lan.curl(&[
        "-H",
        "Authorization: Bearer lan-secret-123",
        &format!("{base}/api/models"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("fake:latest"));
    // A browser: the page sends it to the login page; logging in sets the cookie.
    let (code, _) = lan.curl(&["-H", "Accept: text/html", &format!("{base}/")]);
    assert_eq!(code, 303);
    let jar = std::env::temp_dir().join(format!("kinko-jar-{}", std::process::id()));
    let jar = jar.to_string_lossy().to_string();
    let (code, _) = lan.curl(&[
        "-c",
        &jar,
        "-d",
        "key=lan-secret-123",
        &format!("{base}/login"),
    ]);
    assert_eq!(code, 303);
    let (code, page) = lan.curl(&["-b", &jar, "-H", "Accept: text/html", &format!("{base}/")]);
    assert_eq!(code, 200);
    assert!(page.contains("kinko"), "{page}");
    let (code, _) = lan.curl(&["-b", &jar, &format!("{base}/api/models")]);
    assert_eq!(code, 200);
    let _ = std::fs::remove_file(&jar);
}

/// The CPUs a thread may run on, from /proc (`Cpus_allowed_list`).
fn allowed_cpus(status_path: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(status_path).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    list.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

/// The compute threads of a running kinko, with the CPUs each may use.
fn compute_threads(pid: u32) -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if name.starts_with("kinko-compute-") {
            found.push(allowed_cpus(&task.join("status").to_string_lossy()));
        }
    }
    found
}

#[test]
fn compute_threads_are_one_per_core_each_pinned_to_its_own() {
    let cpus = allowed_cpus("/proc/self/status");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = start(
        &["--engine", "fake", "--addr", &addr],
        &format!("http://{addr}/health"),
        None,
    );
    let mut threads = compute_threads(server.0.id());
    assert_eq!(threads.len(), cpus.len(), "one compute thread per core");
    threads.sort();
    let pinned: Vec<usize> = threads
        .iter()
        .map(|t| {
            assert_eq!(t.len(), 1, "each compute thread is pinned to one core");
            t[0]
        })
        .collect();
    assert_eq!(pinned, cpus, "each core gets its own thread");
    drop(server);

    // --threads and --no-pin: one floating thread.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = start(
        &[
            "--engine",
            "fake",
            "--addr",
            &addr,
            "--threads",
            "1",
            "--no-pin",
        ],
        &format!("http://{addr}/health"),
        None,
    );
    assert_eq!(compute_threads(server.0.id()), vec![cpus]);
}
