#!/usr/bin/env python3
"""Embeddings: kinko as a client sees it (`kinko serve`, `POST /api/embed`,
timed from the client, JSON both ways) and its engine alone (candle-
transformers' BERT, `kinko bench-embed`, no HTTP), against the
`sentence-transformers` package on the same model files (all-MiniLM-L6-v2
from the PyPI wheel) and the same number of threads, alternating, one run:
texts/s for batches of 1, 32 and 256 short sentences and for long passages
(512 tokens before the model's 256-token cut), and the peak RSS of each
process.

sentence-transformers needs torch, which PyPI ships with gigabytes of GPU
libraries: it is not on the test path. Give a Python that has it:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch sentence-transformers
    KINKO_BIN=… ST_PYTHON=/tmp/ref/bin/python python3 bench/embed.py [--threads 2] [--rounds 3]

The served kinko uses KINKO_HOME's all-minilm:latest (scripts/default-model.sh
installs it).
"""
import argparse
import json
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, peak_rss_mb  # noqa: E402
from sections import Worker, start_kinko  # noqa: E402

ST_WORKER = r"""
import json, sys
import torch
torch.set_num_threads(int(sys.argv[2]))
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
print(json.dumps({"ready": True}), flush=True)
import time
for line in sys.stdin:
    texts = json.loads(line)["texts"]
    t = time.perf_counter()
    v = model.encode(texts, batch_size=32, convert_to_numpy=True)
    print(json.dumps({"seconds": time.perf_counter() - t, "first": [float(x) for x in v[0][:4]]}), flush=True)
"""


class Engine(Worker):
    """`kinko bench-embed` or the sentence-transformers worker: one JSON
    line of texts in, one of timings out."""

    def embed(self, texts):
        return self.run(json.dumps({"texts": texts}))

    @property
    def ready_ms(self):
        return (self.ready_at - self.started) * 1000

    @property
    def pid(self):
        return self.proc.pid


class Served:
    """`kinko serve` on a free port; each run is one POST /api/embed."""

    def __init__(self, kinko, threads):
        started = time.perf_counter()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = start_kinko(kinko, ["--threads", str(threads)], port, ["--model-keep-alive=-1"])
        self.post([])  # an empty input loads the model
        self.ready_ms = (time.perf_counter() - started) * 1000
        self.pid = self.proc.pid

    def post(self, texts):
        req = urllib.request.Request(
            f"{self.url}/api/embed", data=json.dumps({"model": "all-minilm", "input": texts}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    def embed(self, texts):
        t = time.perf_counter()
        out = self.post(texts)
        seconds = time.perf_counter() - t
        if len(out["embeddings"]) != len(texts):
            raise SystemExit(f"kinko answered {len(out['embeddings'])} vectors for {len(texts)} texts")
        return {"seconds": seconds, "first": out["embeddings"][0][:4]}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


SENTENCES = [
    "A man is playing a guitar.", "The weather is lovely today.", "How do I reset my password?",
    "She bought fresh bread at the market.", "The train to Kyoto leaves at nine.",
    "Our team shipped the new release on Friday.", "Cats sleep for most of the day.",
    "Please send me the report by noon.",
]


def sentences(n):
    return [f"{SENTENCES[i % len(SENTENCES)]} ({i})" for i in range(n)]


def passages(n):
    # About 512 tokens each before the cut.
    return [" ".join(f"Passage {p}: the lighthouse keeper counted wave number {i} before the storm."
                     for i in range(37)) for p in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model-dir", default=os.path.expanduser("~/.cache/kinko/unpacked/all-minilm"))
    ap.add_argument("--json", default="bench/embed-results.json")
    a = ap.parse_args()
    kinko, st_python = os.environ["KINKO_BIN"], os.environ.get("ST_PYTHON")
    if not st_python:
        raise SystemExit("ST_PYTHON is not set: a Python with torch and sentence-transformers (see the docstring)")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    contenders = {
        "kinko serve, /api/embed": Served(kinko, a.threads),
        "kinko engine alone": Engine([kinko, "--threads", str(a.threads), "bench-embed", a.model_dir], env),
        "sentence-transformers": Engine([st_python, "-c", ST_WORKER, a.model_dir, str(a.threads)], env),
    }
    cases = {"1 sentence": sentences(1), "32 sentences": sentences(32), "256 sentences": sentences(256),
             "32 passages of ~512 tokens": passages(32)}
    rows = []
    try:
        for c in contenders.values():
            c.embed(sentences(8))  # warm-up
        for case, texts in cases.items():
            times = {name: [] for name in contenders}
            reps = 20 if len(texts) == 1 else 1
            for _ in range(a.rounds):
                for name, c in contenders.items():  # alternate
                    total = sum(c.embed(texts)["seconds"] for _ in range(reps))
                    times[name].append(total / reps)
            row = {"case": case, "texts": len(texts)}
            for name, ts in times.items():
                row[name] = len(texts) / statistics.median(ts)
            for name in contenders:
                row[f"{name} ÷ s-t"] = row[name] / row["sentence-transformers"]
            rows.append(row)
        rss = {name: peak_rss_mb(c.pid) for name, c in contenders.items()}
        loads = {name: c.ready_ms for name, c in contenders.items()}
    finally:
        for c in contenders.values():
            c.stop()
    print(f"\nall-MiniLM-L6-v2, {a.threads} threads, median of {a.rounds} alternating rounds\n")
    names = list(contenders)
    print("| case | " + " | ".join(f"{n} (texts/s)" for n in names) + " | kinko ÷ s-t (served, engine) |")
    print("|---" * (len(names) + 2) + "|")
    for r in rows:
        cells = " | ".join(f"{r[n]:.1f}" for n in names)
        print(f"| {r['case']} | {cells} | {r[names[0] + ' ÷ s-t']:.2f}, {r[names[1] + ' ÷ s-t']:.2f} |")
    print("\n| | peak RSS (MB) | start to ready (ms) |\n|---|---|---|")
    for name in contenders:
        print(f"| {name} | {rss[name]:.0f} | {loads[name]:.0f} |")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "rows": rows, "peak_rss_mb": rss, "ready_ms": loads}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
