#!/usr/bin/env python3
"""kinko against llama.cpp on the same GGUF, prompt, token count and thread
count, in one run, alternating the contenders:

  (a) kinko end to end: POST /api/chat/stream, HTTP + SSE, as a browser sees it
  (b) the bare engine as kinko drives it, no HTTP (`kinko bench-engine`)
  (c) llama.cpp through llama-cpp-python, built from source with native flags

For each: time to first token and decode tokens/s (median and spread over
--runs runs after a warm-up) and peak RSS; then the ratios. Also kinko with
1, 4 and 8 concurrent streams: aggregate tokens/s and worst time to first
token. Prints a table and writes JSON. Run it with scripts/bench.sh.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stream_timing import PROMPT, one_run  # noqa: E402

MODEL = "smollm2:135m"
GREEDY = {"repeat_penalty": 1.0}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Worker:
    """A contender process that runs one generation per line on stdin."""

    def __init__(self, cmd, env=None):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.kill()
                raise SystemExit(f"{cmd[0]} did not start")
            if line.startswith("{") and json.loads(line).get("ready"):
                break

    def run(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("a contender died")
        return json.loads(line)

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


class HttpContender:
    def __init__(self, url, model, max_tokens):
        self.url, self.model, self.max_tokens = url, model, max_tokens

    def run(self):
        return one_run(self.url, self.model, self.max_tokens, GREEDY)


def summary(runs, key):
    vals = [r[key] for r in runs]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def concurrent(url, model, n, max_tokens):
    results = [None] * n
    def go(i):
        results[i] = dict(one_run(url, model, max_tokens, GREEDY), start=time.perf_counter())
    t0 = time.perf_counter()
    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r["completion_tokens"] for r in results)
    return {"streams": n, "tokens": tokens, "expected_tokens": n * max_tokens,
            "aggregate_tok_s": tokens / wall, "worst_ttft_ms": max(r["ttft_ms"] for r in results)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=MODEL, help="an installed kinko model; llama.cpp reads the same GGUF")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--json", default="bench/results.json")
    ap.add_argument("--smoke", action="store_true", help="one short generation per contender")
    a = ap.parse_args()
    if a.smoke:
        a.runs, a.max_tokens, a.concurrency = 1, 16, "2"
    kinko = os.environ["KINKO_BIN"]
    home = os.environ["KINKO_HOME"]
    llama_py = os.environ["LLAMA_PYTHON"]
    tagged = a.model if ":" in a.model else f"{a.model}:latest"
    gguf = os.path.join(home, "models", tagged.replace(":", "-"), "model.gguf")
    if not os.path.exists(gguf):
        raise SystemExit(f"{gguf} is missing: run scripts/default-model.sh (or `kinko import` it)")
    threads = ["--threads", str(a.threads)]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([kinko, *threads, "serve", "--addr", f"127.0.0.1:{port}", "--max-concurrent-per-model", "8",
                               "--max-tokens-cap", str(max(a.max_tokens, 16))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            break
        except OSError:
            if time.time() > deadline:
                server.kill()
                raise SystemExit("kinko serve did not start")
            time.sleep(0.1)
    workers = []
    try:
        bare = Worker([kinko, *threads, "bench-engine", a.model, "--prompt", PROMPT, "--max-tokens", str(a.max_tokens)])
        workers.append(bare)
        here = os.path.dirname(os.path.abspath(__file__))
        llama = Worker([llama_py, os.path.join(here, "llama_worker.py"), gguf, PROMPT, str(a.max_tokens),
                        str(a.threads)])
        workers.append(llama)
        contenders = {"kinko (HTTP+SSE)": HttpContender(url, a.model, a.max_tokens), "bare engine": bare,
                      "llama.cpp": llama}
        for c in contenders.values():
            c.run()  # warm-up
        runs = {name: [] for name in contenders}
        for _ in range(a.runs):
            for name, c in contenders.items():  # alternate
                runs[name].append(c.run())
        conc = [concurrent(url, a.model, int(n), a.max_tokens) for n in a.concurrency.split(",")]
        rss = {"kinko (HTTP+SSE)": peak_rss_mb(server.pid), "bare engine": peak_rss_mb(bare.proc.pid),
               "llama.cpp": peak_rss_mb(llama.proc.pid)}
    finally:
        for w in workers:
            w.stop()
        server.terminate()
        server.wait(timeout=10)

    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(),
              "model": a.model, "gguf": os.path.basename(os.path.dirname(gguf)), "threads": a.threads,
              "max_tokens": a.max_tokens, "runs": a.runs, "contenders": {}, "concurrency": conc}
    for name, rs in runs.items():
        result["contenders"][name] = {"ttft_ms": summary(rs, "ttft_ms"), "decode_tok_s": summary(rs, "decode_tok_s"),
                                      "completion_tokens": [r["completion_tokens"] for r in rs],
                                      "peak_rss_mb": rss[name]}
    k, b, l = (result["contenders"][n] for n in ("kinko (HTTP+SSE)", "bare engine", "llama.cpp"))
    result["ratios"] = {
        "decode kinko/llama.cpp": k["decode_tok_s"]["median"] / l["decode_tok_s"]["median"],
        "ttft kinko/llama.cpp": k["ttft_ms"]["median"] / l["ttft_ms"]["median"],
        "decode end-to-end/bare": k["decode_tok_s"]["median"] / b["decode_tok_s"]["median"],
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=2)

    print(f"\n{a.model} ({result['gguf']}), {a.max_tokens} tokens, {a.threads} threads, "
          f"median [min–max] of {a.runs} runs, {result['date']}, {result['cpu']}\n")
    print(f"| contender | first token (ms) | decode (tok/s) | peak RSS (MB) |\n|---|---|---|---|")
    for name, c in result["contenders"].items():
        t, d = c["ttft_ms"], c["decode_tok_s"]
        print(f"| {name} | {t['median']:.0f} [{t['min']:.0f}–{t['max']:.0f}] | "
              f"{d['median']:.1f} [{d['min']:.1f}–{d['max']:.1f}] | {c['peak_rss_mb']:.0f} |")
    print("\n| concurrent streams (kinko) | aggregate tok/s | worst first token (ms) | tokens |\n|---|---|---|---|")
    for c in conc:
        print(f"| {c['streams']} | {c['aggregate_tok_s']:.1f} | {c['worst_ttft_ms']:.0f} | {c['tokens']}/{c['expected_tokens']} |")
    print("\n| ratio | value |\n|---|---|")
    for name, v in result["ratios"].items():
        print(f"| {name} | {v:.2f} |")
    print(f"\nJSON: {a.json}")
    if a.smoke:
        # The smoke run guards the benchmark itself: every contender answered
        # and no concurrent stream lost a token.
        bad = [n for n, c in result["contenders"].items() if min(c["completion_tokens"]) < 1]
        bad += [f"{c['streams']} streams" for c in conc if c["tokens"] != c["expected_tokens"]]
        if bad:
            raise SystemExit(f"benchmark smoke run failed: {', '.join(bad)}")
        print("bench smoke: 1 passed, 0 failed")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
