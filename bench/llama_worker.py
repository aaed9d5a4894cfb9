"""llama.cpp (through llama-cpp-python, built from source with native CPU
flags) as a benchmark contender: loads the GGUF once, then for each line on
stdin runs one greedy streamed chat generation and prints one JSON line."""
import json
import sys
import time

from llama_cpp import Llama

path, prompt, max_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
messages = [{"role": "user", "content": prompt}]
print(json.dumps({"ready": True}), flush=True)
for _ in sys.stdin:
    # Forget the previous run's KV cache: every run evaluates the whole
    # prompt, as kinko does (its prefix cache is off).
    llm.reset()
    t0 = time.perf_counter()
    first = None
    pieces = 0
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
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
        "ttft_ms": (first - t0) * 1000,
        "decode_tok_s": (tokens - 1) / (end - first) if end > first and tokens > 1 else 0.0,
    }), flush=True)
