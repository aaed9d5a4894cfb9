"""kinko in front of an upstream engine: llama.cpp's OpenAI-compatible
server (`python -m llama_cpp.server`, llama-cpp-python) on the same GGUF.

  - one stream, straight to the server and through kinko's
    /v1/chat/completions (an `openai`-kind upstream), alternating, greedy,
    the same tokens: decode tokens/s of each and their ratio (target
    >= 0.98), and the time to first token kinko adds (target <= 5 ms),
    measured on the client as the median of the paired differences;
  - 8 streams at once through kinko over 1 replica and over 2 (each
    replica one thread on a core of its own: llama.cpp's server answers one
    request at a time): aggregate tokens/s, and how kinko spread them.

Used by bench.py (`--only upstream`); the server comes from LLAMA_PYTHON.
"""
import http.client
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

from stream_timing import PROMPT


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url, proc, what):
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise SystemExit(f"{what} did not start")
            time.sleep(0.05)


class LlamaServer:
    """llama.cpp's server on `gguf`, `threads` threads, pinned to `cores`."""

    def __init__(self, llama_py, gguf, threads, cores=None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tempfile.TemporaryFile()
        cmd = [llama_py, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smollm2",
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
               "--n_threads", str(threads), "--n_threads_batch", str(threads),
               "--interrupt_requests", "False"]
        if cores is not None:
            cmd = ["taskset", "-c", cores, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        _wait(f"{self.url}/models", self.proc, "llama.cpp's server")
        # Its first answer sets llama.cpp up (seconds): not measured.
        openai_stream(self.port, "/v1/chat/completions", "smollm2", 4)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def openai_stream(port, path, model, max_tokens, temperature=0.0):
    """One streamed chat completion; client-side times and token count (a
    content chunk is a token on both sides: llama.cpp sends one per token,
    and so does kinko for a client that keeps up)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}],
                       "max_tokens": max_tokens, "temperature": temperature, "stream": True})
    t0 = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {resp.read().decode()}")
    first = None
    tokens = 0
    text = []
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise SystemExit(f"error: {chunk['error']}")
        for choice in chunk.get("choices", []):
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                if first is None:
                    first = time.perf_counter()
                tokens += 1
                text.append(piece)
    end = time.perf_counter()
    conn.close()
    if first is None:
        raise SystemExit("the stream ended without text")
    return {"ttft_ms": (first - t0) * 1000, "decode_tok_s": (tokens - 1) / (end - first) if end > first else 0.0,
            "completion_tokens": tokens, "text": "".join(text), "seconds": end - t0}


def start_front(kinko, replicas):
    port = _free_port()
    args = [kinko, "serve", "--engine", "fake", "--addr", f"127.0.0.1:{port}", "--upstream-max-concurrent", "16",
            "--max-tokens-cap", "4096"]
    for r in replicas:
        args += ["--upstream", f"up=openai:{r.url}"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    _wait(f"http://127.0.0.1:{port}/health", proc, "kinko")
    return proc, port


def _metric(port, replica_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("kinko_upstream_requests_total{") and f":{replica_port}\"" in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def streams_at_once(port, n, max_tokens):
    results = [None] * n

    def go(i):
        results[i] = openai_stream(port, "/v1/chat/completions", "up/smollm2", max_tokens, temperature=0.7)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r["completion_tokens"] for r in results)
    return {"streams": n, "tokens": tokens, "seconds": wall, "aggregate_tok_s": tokens / wall,
            "worst_ttft_ms": max(r["ttft_ms"] for r in results)}


def run(kinko, llama_py, gguf, threads, runs, max_tokens, streams=8, stream_tokens=128):
    out = {}
    # One stream: straight vs through kinko, alternating, on one replica
    # with every thread.
    server = LlamaServer(llama_py, gguf, threads)
    front, port = start_front(kinko, [server])
    try:
        openai_stream(port, "/v1/chat/completions", "up/smollm2", 4)  # warm-up
        direct, through = [], []
        for _ in range(runs):
            direct.append(openai_stream(server.port, "/v1/chat/completions", "smollm2", max_tokens))
            through.append(openai_stream(port, "/v1/chat/completions", "up/smollm2", max_tokens))
        same = all(d["text"] == t["text"] for d, t in zip(direct, through))
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        out["single"] = {
            "runs": runs, "max_tokens": max_tokens, "threads": threads, "same_text": same,
            "direct": {"ttft_ms": med(direct, "ttft_ms"), "decode_tok_s": med(direct, "decode_tok_s"),
                       "completion_tokens": [r["completion_tokens"] for r in direct]},
            "through_kinko": {"ttft_ms": med(through, "ttft_ms"), "decode_tok_s": med(through, "decode_tok_s"),
                              "completion_tokens": [r["completion_tokens"] for r in through]},
            "decode_ratio": med(through, "decode_tok_s") / med(direct, "decode_tok_s"),
            "added_ttft_ms": statistics.median(t["ttft_ms"] - d["ttft_ms"] for d, t in zip(direct, through)),
        }
    finally:
        front.terminate()
        front.wait(timeout=10)
        server.stop()
    # Streams at once: 1 replica vs 2, one thread each on its own core.
    cores = os.cpu_count() or 1
    replicas = [LlamaServer(llama_py, gguf, 1, cores=str(i % cores)) for i in range(2)]
    try:
        scaling = []
        for count in (1, 2):
            front, port = start_front(kinko, replicas[:count])
            try:
                before = [_metric(port, r.port) for r in replicas[:count]]
                row = streams_at_once(port, streams, stream_tokens)
                row["replicas"] = count
                row["requests_per_replica"] = [_metric(port, r.port) - b for r, b in zip(replicas, before)]
                scaling.append(row)
            finally:
                front.terminate()
                front.wait(timeout=10)
        out["replicas"] = scaling
        out["replica_speedup"] = scaling[1]["aggregate_tok_s"] / scaling[0]["aggregate_tok_s"]
    finally:
        for r in replicas:
            r.stop()
    return out


def report(u):
    s = u["single"]
    print(f"\nkinko in front of llama.cpp's server (OpenAI API, one stream, {s['max_tokens']} tokens, "
          f"{s['threads']} threads, median of {s['runs']} alternating runs; same text: {s['same_text']})\n")
    print("| path | first token (ms) | decode (tok/s) |\n|---|---|---|")
    for name, key in (("straight to llama.cpp's server", "direct"), ("through kinko", "through_kinko")):
        print(f"| {name} | {s[key]['ttft_ms']:.1f} | {s[key]['decode_tok_s']:.1f} |")
    print(f"\ndecode ratio (through kinko / straight): {s['decode_ratio']:.3f}; "
          f"time to first token kinko adds: {s['added_ttft_ms']:.2f} ms (median of paired runs)")
    print("\n| replicas (1 thread each) | streams | aggregate tok/s | worst first token (ms) | requests per replica |"
          "\n|---|---|---|---|---|")
    for r in u["replicas"]:
        print(f"| {r['replicas']} | {r['streams']} | {r['aggregate_tok_s']:.1f} | {r['worst_ttft_ms']:.0f} | "
              f"{' / '.join(str(n) for n in r['requests_per_replica'])} |")
    print(f"\n2 replicas / 1: {u['replica_speedup']:.2f}x")
