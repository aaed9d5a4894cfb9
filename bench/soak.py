#!/usr/bin/env python3
"""Soak: mixed traffic on every API of a real `kinko serve`, with random
client disconnects, at 4x the concurrency limit, for a while.

    python3 bench/soak.py --minutes 30            # the soak (not a CI gate)
    python3 bench/soak.py --minutes 1             # the test suite's version

Traffic: kinko's SSE chat, Ollama's chat and generate (streamed and not),
OpenAI's completions (streamed and not), every listing route, show, copy and
delete, and bad requests; about a third of the streamed answers are cut off
by the client mid-answer. Reports requests by status, 5xx other than 503
(must be 0), streams still open at the end (must be 0), every started stream
accounted for in /metrics (started = sum of finished), and the server's RSS
(with its engine processes) after warm-up and at the end (growth < 5%).
Exits non-zero when a condition fails. Standard library only.
"""

import argparse
import collections
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Http:
    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, raw_body=None, cut_after=None, headers=None):
        """One request on a fresh connection. Answers (status, body bytes);
        with `cut_after`, closes the connection after that many body bytes
        (a client that goes away) and answers what it had."""
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else b"")
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n"
        if data or method in ("POST", "DELETE"):
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        s = socket.create_connection(("127.0.0.1", self.port), timeout=300)
        try:
            s.sendall(head.encode() + b"\r\n" + data)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            header, _, rest = buf.partition(b"\r\n\r\n")
            status = int(header.split(b" ")[1]) if header.startswith(b"HTTP/") else 0
            got = rest
            while cut_after is None or len(got) < cut_after:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return status, got
        finally:
            s.close()

    def get_json(self, path):
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        # The body may be chunked: take the JSON object inside.
        text = body.decode(errors="replace")
        return json.loads(text[text.index("{"): text.rindex("}") + 1])


def metrics(http):
    status, body = http.request("GET", "/metrics")
    text = body.decode(errors="replace")
    started = sum(float(v) for v in re.findall(r"^kinko_streams_started_total (\S+)$", text, re.M))
    finished = collections.Counter()
    for reason, v in re.findall(r'^kinko_streams_finished_total\{reason="([^"]+)"\} (\S+)$', text, re.M):
        finished[reason] += float(v)
    active = re.findall(r"^kinko_streams_active (\S+)$", text, re.M)
    return started, finished, float(active[0]) if active else float("nan")


def rss_kib(pid):
    """RSS of `pid` and its descendants (the engine processes), in KiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--bin", default=os.environ.get("KINKO_BIN", str(Path.home() / ".cache/kinko/target/release/kinko")))
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--max-concurrent", type=int, default=4, help="the server's --max-concurrent-per-model")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before the first RSS reading (default: a sixth of the run)")
    ap.add_argument("--max-rss-growth", type=float, default=5.0,
                    help="percent of RSS growth after warm-up that fails the run (default 5; a one-minute run "
                         "measures allocator warm-up as much as leaks, and uses a looser bound)")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    random.seed(args.seed)
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(300.0, duration / 6)
    clients = 4 * args.max_concurrent

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="kinko-soak-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [args.bin, "serve", "--addr", f"127.0.0.1:{port}",
         "--max-concurrent-per-model", str(args.max_concurrent), "--max-tokens-cap", "64"],
        stdout=subprocess.DEVNULL, stderr=log,
    )
    http = Http(port)
    try:
        deadline = time.time() + 30
        while True:
            try:
                http.get_json("/health")
                break
            except (OSError, RuntimeError, ValueError):
                if time.time() > deadline or server.poll() is not None:
                    sys.exit(f"kinko did not start (log: {log.name})")
                time.sleep(0.1)
        tags = http.get_json("/api/tags")
        if not any(m["name"] == args.model for m in tags["models"]):
            sys.exit(f"{args.model} is not installed: run scripts/setup.sh")

        counts = collections.Counter()
        server_errors = []
        lock = threading.Lock()
        stop = threading.Event()
        question = ["Name a colour.", "Count to three.", "Say hello in French.", "What is 2+2?"]

        def msgs():
            return [{"role": "user", "content": random.choice(question)}]

        def cut():
            return random.randint(1, 400) if random.random() < 0.35 else None

        actions = [
            ("kinko sse", 4, lambda: http.request("POST", "/api/chat/stream", {"model": args.model, "messages": msgs(), "options": {"max_tokens": random.randint(4, 24)}}, cut_after=cut())),
            ("ollama chat stream", 3, lambda: http.request("POST", "/api/chat", {"model": args.model, "messages": msgs(), "options": {"num_predict": random.randint(4, 24)}}, cut_after=cut())),
            ("ollama chat", 2, lambda: http.request("POST", "/api/chat", {"model": args.model, "messages": msgs(), "stream": False, "options": {"num_predict": 8}})),
            ("ollama generate", 2, lambda: http.request("POST", "/api/generate", {"model": args.model, "prompt": random.choice(question), "options": {"num_predict": random.randint(4, 16)}}, cut_after=cut())),
            ("openai stream", 3, lambda: http.request("POST", "/v1/chat/completions", {"model": args.model, "messages": msgs(), "stream": True, "max_tokens": random.randint(4, 24)}, cut_after=cut())),
            ("openai", 2, lambda: http.request("POST", "/v1/chat/completions", {"model": args.model, "messages": msgs(), "max_tokens": 8})),
            ("listing", 4, lambda: http.request("GET", random.choice(["/api/tags", "/api/models", "/v1/models", "/api/ps", "/health", "/metrics", "/api/version"]))),
            ("show", 1, lambda: http.request("POST", "/api/show", {"model": args.model})),
            ("copy+delete", 1, None),
            ("bad request", 2, lambda: random.choice([
                lambda: http.request("POST", "/api/chat", raw_body=b"{not json"),
                lambda: http.request("POST", "/api/chat/stream", {"model": "nope:1", "messages": msgs()}),
                lambda: http.request("POST", "/v1/chat/completions", {"model": args.model, "messages": []}),
                lambda: http.request("POST", "/api/generate", {"model": args.model, "prompt": "x", "options": {"num_ctx": -1}}),
                lambda: http.request("GET", "/api/nothing-here"),
            ])()),
        ]
        weighted = [a for a in actions for _ in range(a[1])]

        def copy_delete(n):
            name = f"soak-copy:{n}"
            s1, b1 = http.request("POST", "/api/copy", {"source": args.model, "destination": name})
            s2, b2 = http.request("DELETE", "/api/delete", {"model": name})
            return (s1 if s1 != 200 else s2), b1 + b2

        def worker(i):
            n = 0
            while not stop.is_set():
                kind, _, run = random.choice(weighted)
                n += 1
                try:
                    status, body = copy_delete(f"{i}-{n}") if run is None else run()
                except OSError as e:
                    status, body = -1, str(e).encode()
                with lock:
                    counts[(kind, status)] += 1
                    if status >= 500 and status != 503 or status in (0, -1):
                        server_errors.append((kind, status, body[:300]))

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
        t0 = time.time()
        for t in threads:
            t.start()
        time.sleep(warmup)
        rss_warm = rss_kib(server.pid)
        print(f"soak: {clients} clients; RSS after {warmup:.0f} s warm-up: {rss_warm / 1024:.1f} MiB", flush=True)
        while time.time() - t0 < duration:
            time.sleep(min(30, max(0.1, duration - (time.time() - t0))))
            if server.poll() is not None:
                break
        stop.set()
        for t in threads:
            t.join(timeout=120)
        rss_end = rss_kib(server.pid)
        # Let streams the server is still closing settle.
        settle = time.time() + 15
        while True:
            started, finished, active = metrics(http)
            if (active == 0 and started == sum(finished.values())) or time.time() > settle:
                break
            time.sleep(0.5)
        elapsed = time.time() - t0
    finally:
        alive = server.poll() is None
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()

    total = sum(counts.values())
    by_status = collections.Counter()
    for (_, status), n in counts.items():
        by_status[status] += n
    growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm else float("nan")
    report = {
        "minutes": round(elapsed / 60, 2),
        "clients": clients,
        "requests": total,
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "by_kind": {f"{k} {s}": v for (k, s), v in sorted(counts.items())},
        "server_errors_not_503": len(server_errors),
        "streams_started": started,
        "streams_finished": dict(finished),
        "streams_active_at_end": active,
        "rss_after_warmup_mib": round(rss_warm / 1024, 1),
        "rss_at_end_mib": round(rss_end / 1024, 1),
        "rss_growth_percent": round(growth, 2),
        "server_alive": alive,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    failures = []
    if server_errors:
        failures.append(f"{len(server_errors)} answers were 5xx other than 503 (or no answer): {server_errors[:5]}")
    if active != 0:
        failures.append(f"{active} streams still open at the end")
    if started != sum(finished.values()):
        failures.append(f"streams started {started} != finished {sum(finished.values())} ({dict(finished)})")
    if not growth < args.max_rss_growth:
        failures.append(f"RSS grew {growth:.1f}% from warm-up to the end (limit {args.max_rss_growth:g}%)")
    if not alive:
        failures.append(f"the server died (log: {log.name})")
    if failures:
        print("soak: FAILED\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"soak: passed: {total} requests in {elapsed / 60:.1f} min, 0 5xx other than 503, 0 streams open, "
          f"{started:.0f} streams all accounted for, RSS {rss_warm / 1024:.0f} -> {rss_end / 1024:.0f} MiB ({growth:+.1f}%)")
    os.unlink(log.name)


if __name__ == "__main__":
    main()
