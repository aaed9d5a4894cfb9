#!/usr/bin/env python3
"""Time to first token and decode speed through POST /api/chat/stream, as a
browser sees it (HTTP + SSE), measured on the client side.

usage: bench/stream_timing.py [--url http://127.0.0.1:3000] [--model smollm2:135m]
                              [--runs 3] [--max-tokens 200]
Prints one line per run and the medians; exits non-zero on any error.
"""
import argparse
import http.client
import json
import statistics
import sys
import time
from urllib.parse import urlparse

# About 50 prompt tokens once SmolLM2's chat template is applied.
PROMPT = ("Write a long, detailed story about a lighthouse keeper who finds a "
          "mysterious glowing bottle on the beach one stormy night.")


def one_run(url, model, max_tokens, extra_options=None, messages=None):
    """One answer: the default prompt, or `messages`."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=1800)
    body = json.dumps({
        "model": model,
        "messages": messages or [{"role": "user", "content": PROMPT}],
        "options": {"temperature": 0, "max_tokens": max_tokens, **(extra_options or {})},
    })
    t0 = time.perf_counter()
    conn.request("POST", "/api/chat/stream", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {resp.read().decode()}")
    first = None
    deltas = 0
    meta = done = None
    event = None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            if event == "delta":
                if first is None:
                    first = time.perf_counter()
                deltas += 1
            elif event == "meta":
                meta = data
            elif event == "done":
                done = data
            elif event == "error":
                raise SystemExit(f"error event: {data}")
    end = time.perf_counter()
    conn.close()
    if done is None or first is None:
        raise SystemExit("the stream ended without text or without done")
    tokens = done["usage"]["completion_tokens"]
    return {
        "prompt_tokens": meta["prompt_tokens"],
        "completion_tokens": tokens,
        "ttft_ms": (first - t0) * 1000,
        "decode_tok_s": (tokens - 1) / (end - first) if end > first else 0.0,
        "finish_reason": done["finish_reason"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:3000")
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=200)
    a = ap.parse_args()
    one_run(a.url, a.model, 8)  # warm-up: loads the model
    runs = [one_run(a.url, a.model, a.max_tokens) for _ in range(a.runs)]
    for r in runs:
        print(json.dumps(r))
    print(json.dumps({
        "median_ttft_ms": round(statistics.median(r["ttft_ms"] for r in runs), 1),
        "median_decode_tok_s": round(statistics.median(r["decode_tok_s"] for r in runs), 1),
        "prompt_tokens": runs[0]["prompt_tokens"],
        "completion_tokens": [r["completion_tokens"] for r in runs],
    }))


if __name__ == "__main__":
    sys.exit(main())
