#!/usr/bin/env python3
"""kinko against llama.cpp on the same GGUF, prompt, token count and thread
count, in one run, alternating the contenders:

  (a) kinko end to end: POST /api/chat/stream, HTTP + SSE, as a browser sees it
  (b) the bare engine as kinko drives it, no HTTP (`kinko bench-engine`)
  (c) llama.cpp through llama-cpp-python, built from source with native flags

For each: time to first token and decode tokens/s (median and spread over
--runs runs after a warm-up) and peak RSS; then the ratios. Also kinko with
1, 4 and 8 concurrent streams: aggregate tokens/s and worst time to first
token. Then (sections.py), one run each:

  - model sizes: GGUFs in the shapes of SmolLM2-360M and 1.7B (bench/
    make_shapes.py), kinko against llama.cpp, with the memory-bandwidth
    bound of each size;
  - long chats: time to first token at turns 1, 5, 10 and 20 of a scripted
    conversation (llama.cpp with its prompt cache on) and for single prompts
    of about 512, 2,048 and 8,000 tokens;
  - cold start: process start to the first token of the first request;
  - realistic arrivals: 4 and 8 streams starting 100 ms apart;
  - never stuck: a client gone mid-answer and one second into an
    8,000-token prompt, and how soon the engine is idle;
  - upstream (upstream.py): kinko in front of llama.cpp's server, against
    the server straight, and 8 streams over 1 and 2 replicas.

Prints tables and writes JSON. Run it with scripts/bench.sh.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sections  # noqa: E402
import upstream  # noqa: E402
from stream_timing import PROMPT, one_run  # noqa: E402

MODEL = "smollm2:135m"
GREEDY = {"repeat_penalty": 1.0}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid):
    """Peak RSS of a process plus its live children (kinko serve runs each
    model in an engine process of its own)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    except OSError:
        return total
    return total + sum(peak_rss_mb(c) for c in sections.child_pids(pid))


class HttpContender:
    def __init__(self, url, model, max_tokens):
        self.url, self.model, self.max_tokens = url, model, max_tokens

    def run(self):
        return one_run(self.url, self.model, self.max_tokens, GREEDY)


def summary(runs, key):
    vals = [r[key] for r in runs]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=MODEL, help="an installed kinko model; llama.cpp reads the same GGUF")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--json", default="bench/results.json")
    ap.add_argument("--sizes", default="360m,1.7b", help="model shapes beyond the default model ('' for none)")
    ap.add_argument("--size-runs", type=int, default=3, help="runs per contender at the larger sizes")
    ap.add_argument("--turns", default="1,5,10,20")
    ap.add_argument("--prompt-sizes", default="512,2048,8000")
    ap.add_argument("--arrivals", default="4,8")
    ap.add_argument("--only", default="", help="run only these sections: base,sizes,long,cold,arrivals,stuck,upstream")
    ap.add_argument("--smoke", action="store_true", help="one short generation per contender and section")
    a = ap.parse_args()
    if a.smoke:
        a.runs, a.max_tokens, a.concurrency = 1, 16, "2"
        a.sizes, a.size_runs, a.turns, a.prompt_sizes, a.arrivals = "360m", 1, "1,2", "256", "2"
    only = set(filter(None, a.only.split(",")))
    want = lambda section: not only or section in only  # noqa: E731
    kinko = os.environ["KINKO_BIN"]
    home = os.environ["KINKO_HOME"]
    llama_py = os.environ["LLAMA_PYTHON"]
    tagged = a.model if ":" in a.model else f"{a.model}:latest"
    source = os.path.join(home, "models", tagged.replace(":", "-"), "model.gguf")
    if not os.path.exists(source):
        raise SystemExit(f"{source} is missing: run scripts/default-model.sh (or `kinko import` it)")
    # The benchmark keeps a model store of its own: the random-weight shapes
    # must never show up in the person's model picker. Every kinko command
    # below (server, bench-engine, import) reads it from KINKO_HOME.
    cache = os.environ.get("KINKO_CACHE", os.path.expanduser("~/.cache/kinko"))
    home = os.path.join(cache, "bench-home")
    os.environ["KINKO_HOME"] = home
    gguf = os.path.join(home, "models", tagged.replace(":", "-"), "model.gguf")
    if not os.path.exists(gguf):
        subprocess.run([kinko, "import", a.model, source], check=True, stdout=subprocess.DEVNULL)
    threads = ["--threads", str(a.threads)]
    shapes_dir = os.path.join(cache, "shapes")
    sizes = [x for x in a.sizes.split(",") if x] if want("sizes") else []
    size_models = prepare_sizes(kinko, gguf, shapes_dir, sizes)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # One model in memory at a time, so each size's peak RSS is its own; a
    # first-token timeout long enough for an 8,000-token prompt on a CPU.
    server = sections.start_kinko(kinko, threads, port, [
        "--max-concurrent-per-model", "8", "--max-tokens-cap", str(max(a.max_tokens, 512)),
        "--max-loaded-models", "1", "--first-token-timeout-secs", "1800", "--answer-timeout-secs", "3600"])
    workers = []
    runs, conc, rss, extra = {}, [], {}, {}
    try:
        if want("base"):
            bare = sections.Worker([kinko, *threads, "bench-engine", a.model, "--prompt", PROMPT, "--max-tokens",
                                    str(a.max_tokens)])
            workers.append(bare)
            llama = sections.Llama(llama_py, gguf, a.threads, max_tokens=a.max_tokens)
            workers.append(llama)
            contenders = {"kinko (HTTP+SSE)": HttpContender(url, a.model, a.max_tokens), "bare engine": bare,
                          "llama.cpp": llama}
            for c in contenders.values():
                c.run()  # warm-up
            runs = {name: [] for name in contenders}
            for _ in range(a.runs):
                for name, c in contenders.items():  # alternate
                    runs[name].append(c.run())
            conc = [sections.arrivals(url, a.model, int(n), 0.0, a.max_tokens) for n in a.concurrency.split(",")]
            rss = {"kinko (HTTP+SSE)": peak_rss_mb(server.pid), "bare engine": peak_rss_mb(bare.proc.pid),
                   "llama.cpp": peak_rss_mb(llama.proc.pid)}
            for w in workers:
                w.stop()
            workers.clear()
        if want("stuck"):
            extra["never_stuck"] = sections.never_stuck(url, server.pid, a.model)
        if want("arrivals"):
            one_run(url, a.model, 4, GREEDY)
            extra["arrivals"] = [sections.arrivals(url, a.model, int(n), 0.1, a.max_tokens)
                                 for n in a.arrivals.split(",") if n]
        if want("long"):
            extra["long_chats"] = sections.long_chats(
                url, a.model, llama_py, gguf, ("--threads", a.threads),
                [int(t) for t in a.turns.split(",")], [int(n) for n in a.prompt_sizes.split(",") if n])
        if size_models:
            extra["sizes"] = [measure_size(url, server, a, llama_py, name, path)
                              for name, path in size_models]
    finally:
        for w in workers:
            w.stop()
        server.terminate()
        server.wait(timeout=10)
    if want("cold"):
        extra["cold_start"] = sections.cold_start(kinko, threads, a.model, llama_py, gguf, free_port())
    if want("upstream"):
        extra["upstream"] = upstream.run(kinko, llama_py, gguf, a.threads, a.runs, a.max_tokens,
                                         streams=2 if a.smoke else 8, stream_tokens=8 if a.smoke else 128)

    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(),
              "model": a.model, "gguf": os.path.basename(os.path.dirname(gguf)), "threads": a.threads,
              "max_tokens": a.max_tokens, "runs": a.runs, "contenders": {}, "concurrency": conc, **extra}
    for name, rs in runs.items():
        result["contenders"][name] = {"ttft_ms": summary(rs, "ttft_ms"), "decode_tok_s": summary(rs, "decode_tok_s"),
                                      "completion_tokens": [r["completion_tokens"] for r in rs],
                                      "peak_rss_mb": rss[name]}
    if runs:
        k, b, l = (result["contenders"][n] for n in ("kinko (HTTP+SSE)", "bare engine", "llama.cpp"))
        result["ratios"] = {
            "decode kinko/llama.cpp": k["decode_tok_s"]["median"] / l["decode_tok_s"]["median"],
            "ttft kinko/llama.cpp": k["ttft_ms"]["median"] / l["ttft_ms"]["median"],
            "decode end-to-end/bare": k["decode_tok_s"]["median"] / b["decode_tok_s"]["median"],
        }
    if runs or "sizes" in extra:
        result["bandwidth_gb_s"] = sections.bandwidth_gb_s(sys.executable, a.threads)
        result["bytes_per_token"] = {a.model: sections.weight_bytes_per_token(gguf)}
        for s in extra.get("sizes", []):
            result["bytes_per_token"][s["model"]] = s["bytes_per_token"]
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=2)
    report(result, a)
    if a.smoke:
        # The smoke run guards the benchmark itself: every contender of every
        # section answered and no stream lost a token.
        bad = [n for n, c in result["contenders"].items() if min(c["completion_tokens"]) < 1]
        bad += [f"{c['streams']} streams" for c in conc + extra.get("arrivals", [])
                if c["tokens"] != c["expected_tokens"]]
        bad += [f"{s['model']}" for s in extra.get("sizes", [])
                if min(s["kinko"]["completion_tokens"] + s["llama.cpp"]["completion_tokens"]) < 1]
        if "long_chats" in extra and not extra["long_chats"]["single_prompts"]:
            bad.append("long chats")
        if "upstream" in extra and (not extra["upstream"]["single"]["same_text"]
                                    or min(r["tokens"] for r in extra["upstream"]["replicas"]) < 1):
            bad.append("upstream")
        if bad:
            raise SystemExit(f"benchmark smoke run failed: {', '.join(bad)}")
        print("bench smoke: 1 passed, 0 failed")


def prepare_sizes(kinko, gguf, shapes_dir, sizes):
    """The larger shapes as installed kinko models: generated once
    (make_shapes.py), imported once. Returns (model name, GGUF path)."""
    if not sizes:
        return []
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, os.path.join(here, "make_shapes.py"), gguf, shapes_dir,
                    "--only", ",".join(sizes)], check=True)
    home = os.environ["KINKO_HOME"]  # the benchmark's own store (main sets it)
    out = []
    for size in sizes:
        name = f"smollm2-shape:{size}"
        stored = os.path.join(home, "models", name.replace(":", "-"), "model.gguf")
        if not os.path.exists(stored):
            src = os.path.join(shapes_dir, f"smollm2-{size}-shape.Q8_0.gguf")
            subprocess.run([kinko, "import", name, src], check=True, stdout=subprocess.DEVNULL)
        out.append((name, stored))
    return out


def measure_size(url, server, a, llama_py, name, path):
    """kinko (HTTP+SSE) against llama.cpp on one larger shape, alternating."""
    llama = sections.Llama(llama_py, path, a.threads, max_tokens=a.max_tokens)
    try:
        kinko = HttpContender(url, name, a.max_tokens)
        kinko.run()  # loads it (and unloads the previous model)
        llama.run()
        runs = {"kinko": [], "llama.cpp": []}
        for _ in range(a.size_runs):
            runs["kinko"].append(kinko.run())
            runs["llama.cpp"].append(llama.run())
        rss = {"kinko": peak_rss_mb(server.pid), "llama.cpp": peak_rss_mb(llama.proc.pid)}
    finally:
        llama.stop()
    out = {"model": name, "bytes_per_token": sections.weight_bytes_per_token(path)}
    for who, rs in runs.items():
        out[who] = {"ttft_ms": summary(rs, "ttft_ms"), "decode_tok_s": summary(rs, "decode_tok_s"),
                    "completion_tokens": [r["completion_tokens"] for r in rs], "peak_rss_mb": rss[who]}
    return out


def stream_table(title, rows):
    print(f"\n| {title} | aggregate tok/s | worst first token (ms) | tokens |\n|---|---|---|---|")
    for c in rows:
        print(f"| {c['streams']} | {c['aggregate_tok_s']:.1f} | {c['worst_ttft_ms']:.0f} | "
              f"{c['tokens']}/{c['expected_tokens']} |")


def report(result, a):
    """The tables, in the README's form."""
    print(f"\n{a.model} ({result['gguf']}), {a.max_tokens} tokens, {a.threads} threads, "
          f"median [min–max] of {a.runs} runs, {result['date']}, {result['cpu']}\n")
    if result["contenders"]:
        print("| contender | first token (ms) | decode (tok/s) | peak RSS (MB) |\n|---|---|---|---|")
        for name, c in result["contenders"].items():
            t, d = c["ttft_ms"], c["decode_tok_s"]
            print(f"| {name} | {t['median']:.0f} [{t['min']:.0f}–{t['max']:.0f}] | "
                  f"{d['median']:.1f} [{d['min']:.1f}–{d['max']:.1f}] | {c['peak_rss_mb']:.0f} |")
        stream_table("concurrent streams (kinko)", result["concurrency"])
        print("\n| ratio | value |\n|---|---|")
        for name, v in result["ratios"].items():
            print(f"| {name} | {v:.2f} |")
    if "bandwidth_gb_s" in result:
        bw = result["bandwidth_gb_s"]
        print(f"\nModel sizes (memory read bandwidth {bw:.1f} GB/s with {a.threads} threads; bound = bandwidth ÷ "
              "weight bytes read per token):\n")
        print("| model | weights/token (MB) | bound (tok/s) | contender | first token (ms) | decode (tok/s) | "
              "share of bound | peak RSS (MB) |\n|---|---|---|---|---|---|---|---|")
        rows = []
        if result["contenders"]:
            c = result["contenders"]
            rows.append((a.model, [("kinko", c["kinko (HTTP+SSE)"]), ("llama.cpp", c["llama.cpp"])]))
        for s in result.get("sizes", []):
            rows.append((s["model"], [("kinko", s["kinko"]), ("llama.cpp", s["llama.cpp"])]))
        for model, cs in rows:
            per = result["bytes_per_token"][model]
            bound = bw * 1e9 / per
            for who, c in cs:
                d = c["decode_tok_s"]["median"]
                print(f"| {model} | {per / 1e6:.0f} | {bound:.0f} | {who} | {c['ttft_ms']['median']:.0f} | "
                      f"{d:.1f} | {d / bound:.0%} | {c['peak_rss_mb']:.0f} |")
    if "long_chats" in result:
        lc = result["long_chats"]
        print("\nLong chats: time to first token (ms); kinko re-reads the history, llama.cpp keeps its prompt "
              "cache\n\n| turn | prompt tokens | kinko | llama.cpp (cache on) |\n|---|---|---|---|")
        for t in lc["turns"]:
            print(f"| {t['turn']} | {t['prompt_tokens']} | {t['kinko_ttft_ms']:.0f} | "
                  f"{t['llama_cached_ttft_ms']:.0f} |")
        print("\n| single prompt | prompt tokens | kinko | llama.cpp |\n|---|---|---|---|")
        for p in lc["single_prompts"]:
            print(f"| ~{p['target_tokens']} | {p['prompt_tokens']} | {p['kinko_ttft_ms']:.0f} | "
                  f"{p['llama_ttft_ms']:.0f} |")
    if "never_stuck" in result:
        print("\n| client goes away | prompt tokens | after (s) | engine idle after (ms) |\n|---|---|---|---|")
        for name, c in result["never_stuck"].items():
            print(f"| {name} | {c['prompt_tokens']} | {c['dropped_after_s']:.2f} | {c['idle_after_ms']:.0f} |")
    if "cold_start" in result:
        c = result["cold_start"]
        print(f"\nCold start to the first token: kinko {c['kinko_ms']:.0f} ms (serving after "
              f"{c['kinko_serving_ms']:.0f} ms), llama.cpp {c['llama_ms']:.0f} ms (loaded after "
              f"{c['llama_load_ms']:.0f} ms)")
    if "arrivals" in result:
        stream_table("streams, 100 ms apart (kinko)", result["arrivals"])
    if "upstream" in result:
        upstream.report(result["upstream"])
    print(f"\nJSON: {a.json}")


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
