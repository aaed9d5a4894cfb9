"""kinko in front of real upstream engines: llama.cpp's OpenAI-compatible
server (`python -m llama_cpp.server` from the PyPI package llama-cpp-python,
serving the default model's GGUF; two of them as replicas) and a second
kinko as an Ollama-kind upstream. Every chat API of kinko through each;
cancellation reaching the upstream; failover when a replica is stopped
mid-run, and its return; a slow upstream tripping the timeouts; a wrong
upstream key; the key never shown.

Run by scripts/test.sh; needs KINKO_BIN, KINKO_HOME (with smollm2:135m) and
LLAMA_PYTHON (a Python with llama-cpp-python[server]).
"""
import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import ollama
import openai

from kinko_server import MODEL, free_port

KEY = "upstream-secret-7f3a"
WRONG_KEY = "wrong-key-91c2"
PROCS = []
LOGS = tempfile.TemporaryDirectory(prefix="kinko-upstream-")


def wait_for(url, proc, what, timeout=60, headers=None):
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited with {proc.returncode}:\n{log_of(proc)[-3000:]}")
            if time.time() > deadline:
                raise SystemExit(f"{what} did not start within {timeout} s")
            time.sleep(0.1)


def start(args, name, env=None):
    log_path = os.path.join(LOGS.name, f"{name}.log")
    log = open(log_path, "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, **(env or {})))
    proc.log_path = log_path
    proc.log_file = log
    PROCS.append(proc)
    return proc


def llama(port):
    gguf = os.path.join(os.environ["KINKO_HOME"], "models", MODEL.replace(":", "-"), "model.gguf")
    if not os.path.exists(gguf):
        raise SystemExit(f"{gguf} is missing: run scripts/default-model.sh")
    python = os.environ.get("LLAMA_PYTHON")
    if not python:
        raise SystemExit("LLAMA_PYTHON is not set: scripts/test.sh sets it to the benchmark's virtualenv")
    proc = start([python, "-u", "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smollm2",
                  "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                  # One thread each, also for prompts: two replicas with two
                  # threads each on two cores spin against each other
                  # (seconds to a first token).
                  "--n_threads", "1", "--n_threads_batch", "1",
                  # One answer at a time, none cut short by the next.
                  "--interrupt_requests", "False"], f"llama-{port}")
    wait_for(f"http://127.0.0.1:{port}/v1/models", proc, "llama.cpp's server")
    # Its first answer takes seconds (set-up inside llama.cpp): not in a test.
    direct_answer(port, max_tokens=2)
    return proc


def kinko(port, *args, env=None, name="kinko"):
    proc = start([os.environ["KINKO_BIN"], "serve", "--engine", "fake", "--addr", f"127.0.0.1:{port}",
                  *args], f"{name}-{port}", env)
    wait_for(f"http://127.0.0.1:{port}/health", proc, name)
    return proc


def log_of(proc):
    with open(proc.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def get(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
        body = r.read().decode()
    return json.loads(body) if body.lstrip().startswith(("{", "[")) else body


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
        if not labels and line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}} in the metrics")


class Stream:
    """One `POST /api/chat/stream`, read event by event; close() hangs up."""

    def __init__(self, port, body, timeout=30):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("POST", "/api/chat/stream", json.dumps(body),
                          {"Content-Type": "application/json"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def events(self):
        name = None
        while True:
            line = self.resp.readline()
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                yield name, json.loads(line[5:])

    def all(self):
        out = list(self.events())
        self.close()
        return out

    def close(self):
        self.conn.close()


def text_of(events):
    return "".join(d["text"] for e, d in events if e == "delta")


def setUpModule():
    global A, B, K, SLOW, DRIP, FRONT, PORTS
    PORTS = {n: free_port() for n in ("a", "b", "k", "slow", "drip", "front")}
    A = llama(PORTS["a"])
    B = llama(PORTS["b"])
    # A second kinko as an Ollama-kind upstream, with a key of its own.
    # Its models' window (3072) is what its /api/show tells, so the front
    # uses that rather than its configured default for silent upstreams.
    K = kinko(PORTS["k"], "--fake-models", "echo:1b,plain:latest", "--fake-token-delay-ms", "20",
              "--fake-context", "3072", env={"KINKO_API_KEY": KEY}, name="upstream-kinko")
    # Slow upstreams: no first token within 3 s; tokens 2 s apart.
    SLOW = kinko(PORTS["slow"], "--fake-models", "slow:1b", "--fake-token-delay-ms", "6000", name="slow")
    DRIP = kinko(PORTS["drip"], "--fake-models", "drip:1b", "--fake-token-delay-ms", "2000", name="drip")
    u = lambda p: f"http://127.0.0.1:{PORTS[p]}"
    FRONT = kinko(
        PORTS["front"],
        "--upstream", f"cpp=openai:{u('a')}/v1", "--upstream", f"cpp=openai:{u('b')}/v1",
        "--upstream", f"k2=ollama:{u('k')}", "--upstream", f"bad=ollama:{u('k')}",
        "--upstream", f"slow=ollama:{u('slow')}", "--upstream", f"drip=ollama:{u('drip')}",
        "--upstream-context-length", "2048", "--upstream-check-interval-secs", "1",
        "--first-token-timeout-secs", "3", "--token-timeout-secs", "1",
        env={"KINKO_UPSTREAM_KEY_K2": KEY, "KINKO_UPSTREAM_KEY_BAD": WRONG_KEY}, name="front")


def tearDownModule():
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
    for p in PROCS:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        p.log_file.close()


FRONT_URL = lambda: f"http://127.0.0.1:{PORTS['front']}"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def direct_answer(port, max_tokens=16):
    """What llama.cpp's server answers itself (greedy)."""
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    r = c.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content


class ListingTest(unittest.TestCase):
    def test_upstream_models_are_listed_by_every_api_with_their_prefix(self):
        models = {m["name"]: m for m in get(f"{FRONT_URL()}/api/models")["models"]}
        self.assertEqual(models["cpp/smollm2"]["upstream"], "cpp")
        self.assertEqual(models["cpp/smollm2"]["context_length"], 2048)
        self.assertEqual(models["k2/echo:1b"]["upstream"], "k2")
        self.assertIn("fake:latest", models)
        self.assertNotIn("upstream", models["fake:latest"])
        # The upstream whose key is wrong offers nothing.
        self.assertFalse([n for n in models if n.startswith("bad/")])
        tags = {m.model: m for m in ollama.Client(host=FRONT_URL()).list().models}
        self.assertIn("cpp/smollm2", tags)
        self.assertIn("k2/echo:1b", tags)
        ids = {m.id: m.owned_by for m in openai.OpenAI(base_url=f"{FRONT_URL()}/v1", api_key="x").models.list()}
        self.assertEqual(ids["cpp/smollm2"], "cpp")
        self.assertEqual(ids["k2/echo:1b"], "k2")
        # The upstream kinko's own window, learnt from its /api/show (the
        # front's --upstream-context-length 2048 is for upstreams that tell none).
        self.assertEqual(models["k2/echo:1b"]["context_length"], 3072)
        shown = ollama.Client(host=FRONT_URL()).show("k2/echo:1b")
        self.assertEqual(shown.modelinfo["fake.context_length"], 3072)

    def test_health_shows_every_replica_and_hides_nothing_secret(self):
        health = get(f"{FRONT_URL()}/health")
        states = [(r["upstream"], r["state"]) for r in health["upstreams"]]
        self.assertIn(("k2", "up"), states)
        self.assertIn(("bad", "refused_key"), states)
        self.assertEqual(sum(1 for u, _ in states if u == "cpp"), 2)
        bad = next(r for r in health["upstreams"] if r["upstream"] == "bad")
        self.assertIn("KINKO_UPSTREAM_KEY_BAD", bad["last_error"])
        metrics = get(f"{FRONT_URL()}/metrics")
        for text in (json.dumps(health), metrics, log_of(FRONT)):
            self.assertNotIn(KEY, text)
            self.assertNotIn(WRONG_KEY, text)
        self.assertEqual(metric(metrics, "kinko_upstream_up", upstream="k2"), 1)
        self.assertEqual(metric(metrics, "kinko_upstream_up", upstream="bad"), 0)


class ChatThroughLlamaCppTest(unittest.TestCase):
    """Greedy answers through kinko are the ones llama.cpp gives itself."""

    @classmethod
    def setUpClass(cls):
        cls.expected = direct_answer(PORTS["a"])
        assert cls.expected.strip(), "llama.cpp answered nothing"

    def test_kinko_sse(self):
        events = Stream(PORTS["front"], {"model": "cpp/smollm2", "messages": QUESTION,
                                         "options": {"temperature": 0, "max_tokens": 16}}).all()
        names = [e for e, _ in events]
        self.assertEqual(names[0], "meta")
        self.assertEqual(names[-1], "done")
        self.assertGreater(names.count("delta"), 3)
        self.assertEqual(text_of(events), self.expected)
        done = events[-1][1]
        self.assertEqual(done["finish_reason"], "length")
        self.assertEqual(done["usage"]["completion_tokens"], 16)

    def test_ollama_chat_and_generate(self):
        c = ollama.Client(host=FRONT_URL())
        opts = {"temperature": 0, "num_predict": 16}
        r = c.chat(model="cpp/smollm2", messages=QUESTION, options=opts)
        self.assertEqual(r.message.content, self.expected)
        self.assertEqual(r.eval_count, 16)
        streamed = list(c.chat(model="cpp/smollm2", messages=QUESTION, options=opts, stream=True))
        self.assertEqual("".join(p.message.content for p in streamed), self.expected)
        self.assertTrue(streamed[-1].done)
        g = c.generate(model="cpp/smollm2", prompt=QUESTION[0]["content"], options=opts)
        self.assertEqual(g.response, self.expected)

    def test_openai_chat(self):
        c = openai.OpenAI(base_url=f"{FRONT_URL()}/v1", api_key="x")
        r = c.chat.completions.create(model="cpp/smollm2", messages=QUESTION, max_tokens=16, temperature=0)
        self.assertEqual(r.choices[0].message.content, self.expected)
        self.assertEqual(r.usage.completion_tokens, 16)
        chunks = list(c.chat.completions.create(model="cpp/smollm2", messages=QUESTION, max_tokens=16,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True}))
        self.assertEqual("".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices),
                         self.expected)
        self.assertEqual(chunks[-1].usage.completion_tokens, 16)

    def test_stop_strings_end_the_answer(self):
        word = self.expected.split()[2]
        c = openai.OpenAI(base_url=f"{FRONT_URL()}/v1", api_key="x")
        r = c.chat.completions.create(model="cpp/smollm2", messages=QUESTION, max_tokens=16,
                                      temperature=0, stop=[word])
        self.assertEqual(r.choices[0].message.content, self.expected[:self.expected.index(word)])


class ChatThroughKinkoTest(unittest.TestCase):
    """The second kinko's fake engine echoes the question."""

    def test_every_api(self):
        c = ollama.Client(host=FRONT_URL())
        msgs = [{"role": "user", "content": "hello from the front"}]
        r = c.chat(model="k2/echo:1b", messages=msgs)
        self.assertEqual(r.message.content, "hello from the front")
        # Counts and times are the upstream's own.
        self.assertEqual(r.eval_count, 4)
        self.assertGreater(r.eval_duration, 40_000_000)
        self.assertEqual(
            "".join(p.message.content for p in c.chat(model="k2/echo:1b", messages=msgs, stream=True)),
            "hello from the front")
        # A bare name is `:latest`, as in Ollama.
        self.assertEqual(c.generate(model="k2/plain", prompt="a bare name").response, "a bare name")
        with self.assertRaises(ollama.ResponseError) as e:
            c.generate(model="k2/echo", prompt="x")
        self.assertEqual(e.exception.status_code, 404)
        o = openai.OpenAI(base_url=f"{FRONT_URL()}/v1", api_key="x")
        self.assertEqual(o.chat.completions.create(model="k2/echo:1b", messages=msgs).choices[0].message.content,
                         "hello from the front")
        events = Stream(PORTS["front"], {"model": "k2/echo:1b", "messages": msgs}).all()
        self.assertEqual(text_of(events), "hello from the front")
        done = events[-1][1]
        self.assertEqual(done["usage"]["completion_tokens"], 4)
        self.assertIn("decode_ms", done["timings"])


class CancellationTest(unittest.TestCase):
    def test_a_dropped_client_stops_llama_cpp(self):
        before = {p: log_of(p).count("Disconnected from client") for p in (A, B)}
        s = Stream(PORTS["front"], {"model": "cpp/smollm2",
                                    "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
                                    "options": {"max_tokens": 1500, "temperature": 0.8}})
        deltas = 0
        for name, _ in s.events():
            deltas += name == "delta"
            if deltas == 5:
                break
        hung_up = time.time()
        s.close()
        deadline = time.time() + 5
        while time.time() < deadline:
            after = {p: log_of(p).count("Disconnected from client") for p in (A, B)}
            if after != before:
                break
            time.sleep(0.05)
        self.assertNotEqual(after, before, "llama.cpp's server never saw its client go away")
        noticed = time.time() - hung_up
        print(f"\nllama.cpp stopped {noticed * 1000:.0f} ms after kinko's client hung up")
        # Both are free: each answers a new request at once (with one answer
        # at a time, a generation still running would hold it for ~20 s).
        for port in (PORTS["a"], PORTS["b"]):
            t = time.time()
            direct_answer(port, max_tokens=4)
            self.assertLess(time.time() - t, 5)

    def test_a_dropped_client_stops_the_upstream_kinko(self):
        upstream = f"http://127.0.0.1:{PORTS['k']}/metrics"
        auth = {"Authorization": f"Bearer {KEY}"}
        cancelled = metric(get(upstream, auth), "kinko_streams_finished_total", reason="cancelled")
        long_question = " ".join(f"word{i}" for i in range(300))
        s = Stream(PORTS["front"], {"model": "k2/echo:1b", "messages": [{"role": "user", "content": long_question}]})
        for name, _ in s.events():
            if name == "delta":
                break
        s.close()
        deadline = time.time() + 3
        while time.time() < deadline:
            m = get(upstream, auth)
            if metric(m, "kinko_streams_active") == 0:
                break
            time.sleep(0.05)
        self.assertEqual(metric(m, "kinko_streams_active"), 0)
        self.assertEqual(metric(m, "kinko_streams_finished_total", reason="cancelled"), cancelled + 1)


class TimeoutTest(unittest.TestCase):
    def test_no_first_token_in_time(self):
        t = time.time()
        events = Stream(PORTS["front"], {"model": "slow/slow:1b",
                                         "messages": [{"role": "user", "content": "hi"}]}).all()
        took = time.time() - t
        self.assertEqual(events[-2][0], "error")
        self.assertEqual(events[-2][1]["code"], "timeout")
        self.assertIn("first token", events[-2][1]["message"])
        self.assertEqual(events[-1][1]["finish_reason"], "timeout")
        self.assertLess(took, 5)
        # The slow upstream was hung up on.
        deadline = time.time() + 3
        while metric(get(f"http://127.0.0.1:{PORTS['slow']}/metrics"), "kinko_streams_active") != 0:
            self.assertLess(time.time(), deadline, "the slow upstream kept generating")
            time.sleep(0.05)

    def test_tokens_too_far_apart(self):
        events = Stream(PORTS["front"], {"model": "drip/drip:1b",
                                         "messages": [{"role": "user", "content": "one two three"}]}).all()
        self.assertEqual(text_of(events), "one")
        self.assertEqual(events[-2][1]["code"], "timeout")
        self.assertIn("next token", events[-2][1]["message"])
        self.assertEqual(events[-1][1]["finish_reason"], "timeout")


class WrongKeyTest(unittest.TestCase):
    def test_a_wrong_key_is_a_clear_error_on_every_api(self):
        with self.assertRaises(ollama.ResponseError) as e:
            ollama.Client(host=FRONT_URL()).chat(model="bad/echo:1b", messages=QUESTION)
        self.assertEqual(e.exception.status_code, 502)
        self.assertIn("refused kinko's key", str(e.exception))
        self.assertIn("KINKO_UPSTREAM_KEY_BAD", str(e.exception))
        with self.assertRaises(openai.APIStatusError) as e:
            openai.OpenAI(base_url=f"{FRONT_URL()}/v1", api_key="x", max_retries=0).chat.completions.create(
                model="bad/echo:1b", messages=QUESTION)
        self.assertEqual(e.exception.status_code, 502)
        s = Stream(PORTS["front"], {"model": "bad/echo:1b", "messages": QUESTION})
        body = json.loads(s.resp.read())
        s.close()
        self.assertEqual(s.status, 502)
        self.assertEqual(body["error"]["code"], "upstream")
        self.assertNotIn(WRONG_KEY, log_of(FRONT))
        self.assertNotIn(KEY, log_of(FRONT))


class ConfigTest(unittest.TestCase):
    """Upstreams from the environment, an allow-list, a small window and a
    load limit of one answer per upstream."""

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        u = lambda p: f"http://127.0.0.1:{PORTS[p]}"  # noqa: E731
        cls.proc = kinko(cls.port, name="front-env", env={
            "KINKO_UPSTREAMS": f"k2=ollama:{u('k')},cpp=openai:{u('a')}/v1,drip=ollama:{u('drip')}",
            "KINKO_UPSTREAM_KEY_K2": KEY,
            "KINKO_UPSTREAM_ALLOW": "k2/echo*,drip/drip:1b",
            "KINKO_UPSTREAM_CONTEXT_LENGTH": "512",
            "KINKO_UPSTREAM_MAX_CONCURRENT": "1",
            "KINKO_UPSTREAM_MAX_QUEUE": "0",
        })
        cls.url = f"http://127.0.0.1:{cls.port}"

    def test_the_environment_and_the_allow_list(self):
        names = sorted(m["name"] for m in get(f"{self.url}/api/models")["models"] if m.get("upstream"))
        # plain:latest is not named, nor is anything of cpp.
        self.assertEqual(names, ["drip/drip:1b", "k2/echo:1b"])
        with self.assertRaises(ollama.ResponseError) as e:
            ollama.Client(host=self.url).chat(model="cpp/smollm2", messages=QUESTION)
        self.assertEqual(e.exception.status_code, 404)

    def test_the_history_window_fits_the_upstreams_context(self):
        history = []
        for i in range(100):
            history += [{"role": "user", "content": f"question {i} " + "words " * 20},
                        {"role": "assistant", "content": f"answer {i} " + "words " * 20}]
        history.append({"role": "user", "content": "the last question"})
        events = Stream(self.port, {"model": "k2/echo:1b", "messages": history,
                                    "options": {"max_tokens": 32}}).all()
        meta = events[0][1]
        # The upstream's own window (3072, from its /api/show) wins over
        # KINKO_UPSTREAM_CONTEXT_LENGTH (512), which is for upstreams that
        # tell none.
        self.assertEqual(meta["context_window"], 3072)
        self.assertGreater(meta["trimmed_messages"], 40)
        self.assertLessEqual(meta["prompt_tokens"] + 32, 3072)
        self.assertEqual(text_of(events), "the last question")

    def test_one_answer_at_a_time_per_upstream(self):
        slow = Stream(self.port, {"model": "drip/drip:1b", "messages": [{"role": "user", "content": "a b c"}]})
        try:
            # The drip upstream holds the one slot; echo, on another upstream, does not wait.
            busy = Stream(self.port, {"model": "drip/drip:1b", "messages": QUESTION})
            body = json.loads(busy.resp.read())
            busy.close()
            self.assertEqual(busy.status, 503)
            self.assertEqual(body["error"]["code"], "busy")
            self.assertEqual(text_of(Stream(self.port, {"model": "k2/echo:1b", "messages": QUESTION}).all()),
                             QUESTION[0]["content"])
        finally:
            slow.close()


class FailoverTest(unittest.TestCase):
    """Runs last (the name): it stops replica A and starts it again."""

    def test_z_a_stopped_replica_is_skipped_and_comes_back(self):
        global A
        results = []
        stop = threading.Event()

        def run():
            while not stop.is_set():
                t = time.time()
                try:
                    events = Stream(PORTS["front"], {
                        "model": "cpp/smollm2",
                        "messages": [{"role": "user", "content": "Tell me about the sea."}],
                        "options": {"max_tokens": 48, "temperature": 0.7}}, timeout=20).all()
                except OSError as e:
                    events = [("client-error", {"message": str(e)})]
                results.append((t, time.time(), events))

        workers = [threading.Thread(target=run) for _ in range(2)]
        for w in workers:
            w.start()
        time.sleep(3)
        killed = time.time()
        A.send_signal(signal.SIGKILL)
        A.wait()
        time.sleep(4)
        stop.set()
        for w in workers:
            w.join(timeout=30)
        self.assertFalse(any(w.is_alive() for w in workers), "a request hung")
        before = [r for r in results if r[1] < killed]
        during = [r for r in results if r[0] < killed <= r[1]]
        after = [r for r in results if r[0] >= killed]
        self.assertTrue(before and after, [(round(r[0] - killed, 2), round(r[1] - killed, 2),
                                             r[2][-3:]) for r in results])
        for _, _, events in results:
            names = [e for e, _ in events]
            # Every answer ended: with `done`, after an `error` if it failed.
            self.assertEqual(names[-1], "done", names)
            if "error" in names:
                self.assertEqual(events[names.index("error")][1]["code"], "upstream")
        for _, _, events in after:
            self.assertNotIn("error", [e for e, _ in events], "a request after the stop failed")
        broken = [r for r in during if "error" in [e for e, _ in r[2]]]
        ttft = lambda rs: sorted(r[2][-1][1]["timings"]["ttft_ms"] for r in rs)
        m = get(f"{FRONT_URL()}/metrics")
        label = f"127.0.0.1:{PORTS['a']}"
        tried_dead = metric(m, "kinko_upstream_errors_total", upstream="cpp", replica=label, kind="connect")
        print(f"\nfailover: {len(before)} answers before the stop, {len(during)} open at it "
              f"({len(broken)} broke off mid-answer with an error and done), {len(after)} after it, all answered; "
              f"{tried_dead:.0f} requests tried the stopped replica before it was skipped; "
              f"TTFT before the stop {ttft(before)[len(before) // 2]:.0f} ms (median), "
              f"after it {ttft(after)[len(after) // 2]:.0f} ms (median), {ttft(after)[-1]:.0f} ms (max)")
        health = get(f"{FRONT_URL()}/health")
        a_url = f"http://127.0.0.1:{PORTS['a']}/v1"
        self.assertEqual(next(r for r in health["upstreams"] if r["url"] == a_url)["state"], "down")
        # Back on the same port: the health checks bring it back.
        A = llama(PORTS["a"])
        back = time.time()
        while next(r for r in get(f"{FRONT_URL()}/health")["upstreams"] if r["url"] == a_url)["state"] != "up":
            self.assertLess(time.time() - back, 40, "the replica never came back")
            time.sleep(0.1)
        print(f"replica A back in service {time.time() - back:.1f} s after it answered again")
        sent = metric(get(f"{FRONT_URL()}/metrics"), "kinko_upstream_requests_total", upstream="cpp", replica=label)
        threads = [threading.Thread(target=lambda: Stream(PORTS["front"], {
            "model": "cpp/smollm2", "messages": QUESTION, "options": {"max_tokens": 24}}).all()) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        after_back = metric(get(f"{FRONT_URL()}/metrics"), "kinko_upstream_requests_total", upstream="cpp", replica=label)
        self.assertGreater(after_back, sent, "the replica that came back got no requests")
        m = get(f"{FRONT_URL()}/metrics")
        self.assertGreater(metric(m, "kinko_upstream_errors_total", upstream="cpp", replica=label, kind="midstream"), 0)
        # Stopped while idle: the next request that picks it is turned away
        # at connect and goes to B at once; the ones after skip it.
        A.send_signal(signal.SIGKILL)
        A.wait()
        refused = metric(m, "kinko_upstream_errors_total", upstream="cpp", replica=label, kind="connect")
        ttfts = []
        for _ in range(4):
            events = Stream(PORTS["front"], {"model": "cpp/smollm2", "messages": QUESTION,
                                             "options": {"max_tokens": 8}}).all()
            self.assertIn(events[-1][1]["finish_reason"], ("stop", "length"), events)
            ttfts.append(events[-1][1]["timings"]["ttft_ms"])
        m = get(f"{FRONT_URL()}/metrics")
        tried = metric(m, "kinko_upstream_errors_total", upstream="cpp", replica=label, kind="connect") - refused
        self.assertLessEqual(tried, 1)
        print(f"replica A stopped while idle: {tried:.0f} request tried it first; TTFT of the next 4 answers "
              + ", ".join(f"{t:.0f}" for t in ttfts) + " ms")


if __name__ == "__main__":
    unittest.main()
