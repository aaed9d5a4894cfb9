"""The benchmark's sections beyond one short prompt (bench.py runs them):
model sizes, long chats, cold start and realistic arrivals. Each measures
kinko end to end (HTTP + SSE) and, where it has one, llama.cpp on the same
GGUF, alternating, one run each unless said otherwise."""
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request

from stream_timing import PROMPT, one_run

GREEDY = {"repeat_penalty": 1.0}
HERE = os.path.dirname(os.path.abspath(__file__))

# A scripted conversation: every turn adds one exchange (about 150 tokens).
USER_TURN = ("Here is the next part of my travel diary, day {i}: we took the early train along the coast, "
             "stopped in a small fishing town, walked up to the old castle and ate grilled sardines by the "
             "harbour. What should I see tomorrow?")
ASSISTANT_TURN = ("For day {i}, I would follow the coastal path north to the lighthouse in the morning, when the "
                  "light is soft and the path is quiet. Have lunch at one of the family restaurants near the "
                  "market, then visit the maritime museum, which tells the story of the town's fishing fleet. "
                  "In the evening, the sunset from the castle walls is worth the climb.")
FILLER = ("The committee met again on Tuesday to review the budget for the new library, and after a long "
          "discussion about shelving, lighting and the children's reading corner, they agreed to ask the "
          "architect for two more drafts before the end of the month. ")


def conversation(turn):
    """The history at `turn` (1-based): turn-1 earlier exchanges, then a question."""
    messages = []
    for i in range(1, turn):
        messages.append({"role": "user", "content": USER_TURN.format(i=i)})
        messages.append({"role": "assistant", "content": ASSISTANT_TURN.format(i=i)})
    messages.append({"role": "user", "content": USER_TURN.format(i=turn)})
    return messages


def long_prompt(words):
    """One user message of about `words` words."""
    per = len(FILLER.split())
    text = FILLER * (words // per + 1)
    return [{"role": "user", "content": " ".join(text.split()[:words]) + "\nSummarise this in one line."}]


class Worker:
    """A contender process that loads its model, says {"ready": true}, then
    answers each line on stdin with one JSON line (bench-engine,
    llama_worker.py). Lines before "ready" (mistral.rs prints the model's
    settings) are skipped."""

    def __init__(self, cmd, env=None):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.kill()
                raise SystemExit(f"{' '.join(cmd[:3])} did not start")
            if line.startswith("{") and json.loads(line).get("ready"):
                break
        self.ready_at = time.perf_counter()

    def run(self, request="go"):
        """One request line; its JSON answer."""
        self.proc.stdin.write(request + "\n")
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


class Llama(Worker):
    """llama.cpp (bench/llama_worker.py) on one GGUF."""

    def __init__(self, llama_py, gguf, threads, n_ctx=2048, max_tokens=16):
        super().__init__([llama_py, os.path.join(HERE, "llama_worker.py"), gguf, PROMPT, str(max_tokens),
                          str(threads), str(n_ctx)])

    def ask(self, messages=None, max_tokens=16, cache=False):
        req = {"max_tokens": max_tokens, "cache": cache}
        if messages is not None:
            req["messages"] = messages
        return self.run(json.dumps(req))


def start_kinko(kinko, threads, port, extra=()):
    """`kinko serve` on `port`; returns the process once /health answers."""
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([kinko, *threads, "serve", "--addr", f"127.0.0.1:{port}", *extra],
                              stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                log.seek(0)
                raise SystemExit(f"kinko serve did not start:\n{log.read().decode(errors='replace')}")
            time.sleep(0.01)


def long_chats(url, model, llama_py, gguf, threads, turns, sizes, runs_tokens=16):
    """Time to first token at the given turns of the scripted conversation,
    kinko (no prompt cache: it re-reads the history) against llama.cpp with
    its prompt cache on (it reads only what is new); then single prompts of
    about the given sizes, both without a cache."""
    opts = dict(GREEDY, num_ctx=8192)
    llama = Llama(llama_py, gguf, threads[1], n_ctx=8192)
    try:
        # llama.cpp walks every turn in order, as a chat would, so its cache
        # holds the previous turn; kinko answers only the measured turns.
        llama_turns = {}
        for t in range(1, max(turns) + 1):
            r = llama.ask(conversation(t), runs_tokens, cache=t > 1)
            if t in turns:
                llama_turns[t] = r
        chat = []
        for t in turns:
            k = one_run(url, model, runs_tokens, opts, conversation(t))
            chat.append({"turn": t, "prompt_tokens": k["prompt_tokens"], "kinko_ttft_ms": k["ttft_ms"],
                         "llama_prompt_tokens": llama_turns[t]["prompt_tokens"],
                         "llama_cached_ttft_ms": llama_turns[t]["ttft_ms"]})
        # Words per token of the filler, from kinko's own count.
        probe = one_run(url, model, 1, opts, long_prompt(400))
        tokens_per_word = probe["prompt_tokens"] / 400
        single = []
        for target in sizes:
            words = max(16, int((target - 30) / tokens_per_word))
            messages = long_prompt(words)
            k = one_run(url, model, runs_tokens, opts, messages)
            l = llama.ask(messages, runs_tokens, cache=False)
            single.append({"target_tokens": target, "prompt_tokens": k["prompt_tokens"],
                           "kinko_ttft_ms": k["ttft_ms"], "llama_ttft_ms": l["ttft_ms"]})
    finally:
        llama.stop()
    return {"turns": chat, "single_prompts": single}


def cold_start(kinko, threads, model, llama_py, gguf, port):
    """From starting the process to the first token of the first request,
    model load included (the GGUF is in the page cache for both)."""
    t0 = time.perf_counter()
    server = start_kinko(kinko, threads, port)
    try:
        up = time.perf_counter()
        r = one_run(f"http://127.0.0.1:{port}", model, 8, GREEDY)
        kinko_ms = (up - t0) * 1000 + r["ttft_ms"]
    finally:
        server.terminate()
        server.wait(timeout=10)
    llama = Llama(llama_py, gguf, threads[1])
    try:
        r = llama.ask(None, 8)
        llama_ms = (llama.ready_at - llama.started) * 1000 + r["ttft_ms"]
    finally:
        llama.stop()
    return {"kinko_ms": kinko_ms, "kinko_serving_ms": (up - t0) * 1000, "llama_ms": llama_ms,
            "llama_load_ms": (llama.ready_at - llama.started) * 1000}


def arrivals(url, model, n, gap_s, max_tokens):
    """`n` streams, each starting `gap_s` after the previous one."""
    results = [None] * n

    def go(i):
        time.sleep(i * gap_s)
        results[i] = one_run(url, model, max_tokens, GREEDY)
    t0 = time.perf_counter()
    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r["completion_tokens"] for r in results)
    return {"streams": n, "gap_ms": gap_s * 1000, "tokens": tokens, "expected_tokens": n * max_tokens,
            "aggregate_tok_s": tokens / wall, "worst_ttft_ms": max(r["ttft_ms"] for r in results)}


def bandwidth_gb_s(python, threads):
    """Memory read bandwidth with `threads` threads summing their own 256 MB
    arrays (numpy releases the GIL), best of 5: the ceiling on decode speed
    is this divided by the bytes each token reads."""
    code = f"""
import numpy as np, threading, time
n = {threads}
arrays = [np.ones(64 * 1024 * 1024, dtype=np.float32) for _ in range(n)]
best = 0.0
for _ in range(5):
    def work(a):
        a.sum()
    ts = [threading.Thread(target=work, args=(a,)) for a in arrays]
    t0 = time.perf_counter()
    [t.start() for t in ts]
    [t.join() for t in ts]
    best = max(best, n * arrays[0].nbytes / (time.perf_counter() - t0) / 1e9)
print(best)
"""
    return float(subprocess.check_output([python, "-c", code], text=True).strip())


def weight_bytes_per_token(gguf):
    """Bytes of weights one decode step reads: the whole file, less the
    embedding table when the output matrix is separate (one row of it is
    read per token)."""
    size = os.path.getsize(gguf)
    try:
        from gguf import GGUFReader  # only in the bench virtualenv
    except ImportError:
        return size
    reader = GGUFReader(gguf)
    names = {t.name: t for t in reader.tensors}
    if "output.weight" in names and "token_embd.weight" in names:
        size -= int(names["token_embd.weight"].n_bytes)
    return size


def child_pids(pid):
    """Child processes of `pid`: a child belongs to the thread that started
    it, so every thread's list counts."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[11]) + int(fields[12])


def _idle_after(pid, dropped, quiet_s=0.2):
    """Seconds from `dropped` to the engine process's last bit of work (its
    CPU time, in 10 ms ticks, stops growing for `quiet_s`) or to its end."""
    last_ticks, last_change = _cpu_ticks(pid), dropped
    while True:
        time.sleep(0.005)
        ticks = _cpu_ticks(pid)
        now = time.perf_counter()
        if ticks is None:
            return now - dropped
        if ticks != last_ticks:
            last_ticks, last_change = ticks, now
        elif now - last_change >= quiet_s:
            return max(0.0, last_change - dropped)


def never_stuck(url, server_pid, model):
    """A client goes away (a) ten tokens into an answer, (b) one second
    into an 8,000-token prompt: time from the drop to an idle engine."""
    import http.client
    from urllib.parse import urlparse
    u = urlparse(url)
    out = {}
    # A long conversation filling most of an 8,192-token window.
    long_chat = conversation(60)
    cases = {"short prompt, mid-answer": ([{"role": "user", "content": PROMPT}], 500, "delta", 10),
             "8k-token history, mid-prompt": (long_chat, 32, "meta", 1)}
    for name, (messages, max_tokens, wait_for, count) in cases.items():
        one_run(url, model, 4, GREEDY)  # the engine is up and idle
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        body = json.dumps({"model": model, "messages": messages,
                           "options": dict(GREEDY, temperature=0, max_tokens=max_tokens, num_ctx=8192)})
        sent = time.perf_counter()
        conn.request("POST", "/api/chat/stream", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise SystemExit(f"never stuck, {name}: HTTP {resp.status}: {resp.read().decode()}")
        seen, prompt_tokens, event = 0, None, None
        while seen < count:
            line = resp.readline().decode()
            if not line:
                raise SystemExit(f"never stuck, {name}: the stream ended early")
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: "):
                if event == "meta":
                    prompt_tokens = json.loads(line[6:])["prompt_tokens"]
                if event == wait_for:
                    seen += 1
        if wait_for == "meta":
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - sent)))
        pids = child_pids(server_pid)
        conn.sock.close()
        conn.close()
        dropped = time.perf_counter()
        idle = max(_idle_after(pid, dropped) for pid in pids)
        out[name] = {"prompt_tokens": prompt_tokens, "dropped_after_s": dropped - sent, "idle_after_ms": idle * 1000}
    return out
