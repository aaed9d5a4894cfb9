"""llama.cpp (through llama-cpp-python, built from source with native CPU
flags) as a benchmark contender: loads the GGUF once, then for each line on
stdin runs one greedy streamed chat generation and prints one JSON line.

A line `go` runs the default prompt with no prompt cache. A JSON line
{"messages": [...], "max_tokens": N, "cache": true|false} runs that
conversation; with "cache" true the KV cache of the previous run is kept,
so a shared prefix is not evaluated again (what llama.cpp's server does by
default).

    llama_worker.py MODEL.gguf PROMPT MAX_TOKENS THREADS [N_CTX]
"""
import json
import sys
import time

from llama_cpp import Llama

path, prompt, max_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
n_ctx = int(sys.argv[5]) if len(sys.argv) > 5 else 2048
started = time.perf_counter()
llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
print(json.dumps({"ready": True, "load_ms": (time.perf_counter() - started) * 1000}), flush=True)
for line in sys.stdin:
    line = line.strip()
    req = json.loads(line) if line.startswith("{") else {}
    messages = req.get("messages", [{"role": "user", "content": prompt}])
    tokens_wanted = req.get("max_tokens", max_tokens)
    if not req.get("cache", False):
        # Forget the previous run's KV cache: the whole prompt is evaluated,
        # as kinko does (its prefix cache is off).
        llm.reset()
    t0 = time.perf_counter()
    first = None
    pieces = 0
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=tokens_wanted, temperature=0.0,
                                            top_k=1, repeat_penalty=1.0, stream=True):
        delta = chunk["choices"][0]["delta"].get("content")
        if delta:
            if first is None:
                first = time.perf_counter()
            pieces += 1
    end = time.perf_counter()
    # The streamed pieces are one per token (llama-cpp-python yields per token).
    tokens = pieces
    first = first or end
    print(json.dumps({
        "completion_tokens": tokens,
        "prompt_tokens": llm.n_tokens - tokens,
        "ttft_ms": (first - t0) * 1000,
        "decode_tok_s": (tokens - 1) / (end - first) if end > first and tokens > 1 else 0.0,
    }), flush=True)
