"""The official `ollama` and `openai` Python packages against the real kinko
binary and the real default model: chat, streaming chat, generate, list,
show, ps, copy, delete and the models list, unchanged clients.

Run by scripts/test.sh inside a virtualenv; needs KINKO_BIN and KINKO_HOME
(with smollm2:135m installed). The test copies the model into a temporary
store, so copy and delete never touch the user's models.
"""
import os
import time
import unittest

import ollama
import openai

from kinko_server import MODEL, module_fixture


SERVER = None
setUpModule, tearDownModule = module_fixture(globals())


GREEDY = {"temperature": 0, "num_predict": 32}



def children(pid):
    """Live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the command name: state, then the parent's pid.
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry))
    return found


class OllamaClientTest(unittest.TestCase):
    def setUp(self):
        self.client = ollama.Client(host=SERVER.url)

    def test_list_and_show(self):
        names = [m.model for m in self.client.list().models]
        self.assertIn(MODEL, names)
        shown = self.client.show(MODEL)
        self.assertEqual(shown.details.family, "llama")
        self.assertEqual(shown.details.format, "gguf")
        self.assertTrue(shown.details.quantization_level)
        self.assertIn("llama.context_length", shown.modelinfo)

    def test_chat(self):
        r = self.client.chat(model=MODEL, messages=[{"role": "user", "content": "Name a fruit."}], options=GREEDY)
        self.assertTrue(r.done)
        self.assertIn(r.done_reason, ("stop", "length"))
        self.assertTrue(r.message.content.strip())
        self.assertEqual(r.message.role, "assistant")
        self.assertLessEqual(r.eval_count, 32)
        self.assertGreater(r.prompt_eval_count, 0)
        for d in (r.total_duration, r.eval_duration):
            self.assertGreater(d, 0)
        self.assertGreaterEqual(r.total_duration, r.eval_duration)

    def test_streaming_chat_and_two_turns(self):
        chunks = list(self.client.chat(
            model=MODEL, stream=True, options=GREEDY,
            messages=[{"role": "user", "content": "What is 2 + 2?"},
                      {"role": "assistant", "content": "4"},
                      {"role": "user", "content": "Now explain in two sentences what addition is."}]))
        self.assertGreater(len(chunks), 2)
        self.assertTrue(all(not c.done for c in chunks[:-1]))
        last = chunks[-1]
        self.assertTrue(last.done)
        text = "".join(c.message.content for c in chunks)
        self.assertTrue(text.strip())
        self.assertGreater(last.eval_count, 0)
        self.assertIn(last.done_reason, ("stop", "length"))

    def test_stop_strings(self):
        prompt = "Write three sentences about the ocean."
        full = self.client.generate(model=MODEL, prompt=prompt, options={"temperature": 0, "num_predict": 40}).response
        words = full.split()
        self.assertGreater(len(words), 6, full)
        stop = words[4]
        cut = self.client.generate(model=MODEL, prompt=prompt, options={"temperature": 0, "num_predict": 40, "stop": [stop]})
        self.assertEqual(cut.done_reason, "stop")
        self.assertNotIn(stop, cut.response)
        self.assertEqual(cut.response, full[:full.index(stop)])

    def test_generate(self):
        r = self.client.generate(model=MODEL, prompt="Say hello.", options=GREEDY)
        self.assertTrue(r.done)
        self.assertTrue(r.response.strip())
        pieces = list(self.client.generate(model=MODEL, prompt="Say hello.", options=GREEDY, stream=True))
        self.assertEqual("".join(p.response for p in pieces), r.response)

    def test_ps_lists_the_loaded_model(self):
        self.client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2})
        names = [m.model for m in self.client.ps().models]
        self.assertIn(MODEL, names)

    def loaded(self):
        return [m.model for m in self.client.ps().models]

    def wait_unloaded(self, name):
        deadline = time.time() + 5
        while name in self.loaded():
            self.assertLess(time.time(), deadline, f"{name} is still loaded")
            time.sleep(0.1)

    def test_keep_alive(self):
        import datetime
        # Default keep-alive: about five minutes from now.
        self.client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2})
        m = [m for m in self.client.ps().models if m.model == MODEL][0]
        left = (m.expires_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        self.assertTrue(240 < left <= 300, left)
        # keep_alive 0 on an answer: unloaded once the answer ends.
        self.client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2}, keep_alive=0)
        self.wait_unloaded(MODEL)
        # No prompt loads; no prompt with keep_alive 0 unloads.
        r = self.client.generate(model=MODEL)
        self.assertEqual(r.done_reason, "load")
        self.assertIn(MODEL, self.loaded())
        r = self.client.generate(model=MODEL, keep_alive=0)
        self.assertEqual(r.done_reason, "unload")
        self.assertNotIn(MODEL, self.loaded())
        # A short keep-alive runs out by itself.
        self.client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2}, keep_alive="1s")
        self.assertIn(MODEL, self.loaded())
        self.wait_unloaded(MODEL)

    def engine_processes(self):
        """kinko's engine processes (one per loaded model): the server's children."""
        return children(SERVER.proc.pid)

    def engine_threads(self):
        """Threads of the per-model compute pools (see server/src/threads.rs), in
        the engine processes."""
        names = []
        for pid in self.engine_processes():
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue  # the process ended meanwhile
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/comm") as f:
                        names.append(f.read().strip())
                except OSError:
                    pass  # the thread ended meanwhile
        return [n for n in names if n.startswith("kinko-engine-")]

    def test_the_engine_thread_joins_a_compute_pool_that_goes_with_the_model(self):
        cores = len(os.sched_getaffinity(SERVER.proc.pid))
        self.client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2})
        # The engine thread is worker 0; the other workers are new threads.
        self.assertEqual(len(self.engine_threads()), cores - 1 if cores > 1 else 0)
        self.client.generate(model=MODEL, keep_alive=0)
        self.wait_unloaded(MODEL)
        deadline = time.time() + 10
        while self.engine_processes() and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.engine_processes(), [], "an unloaded model leaves no engine process")
        self.assertEqual(self.engine_threads(), [], "an unloaded model leaves no compute threads")

    def test_the_least_recently_used_model_is_evicted(self):
        # The server holds one model at a time (--max-loaded-models 1).
        self.client.copy(MODEL, "twin:lru")
        try:
            self.client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2})
            self.assertEqual(self.loaded(), [MODEL])
            self.client.generate(model="twin:lru", prompt="Hi", options={"num_predict": 2})
            self.assertEqual(self.loaded(), ["twin:lru"])
        finally:
            self.client.delete("twin:lru")

    def test_copy_then_delete(self):
        self.client.copy(MODEL, "smollm2-copy:test")
        names = [m.model for m in self.client.list().models]
        self.assertIn("smollm2-copy:test", names)
        self.client.delete("smollm2-copy:test")
        names = [m.model for m in self.client.list().models]
        self.assertNotIn("smollm2-copy:test", names)
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.delete("smollm2-copy:test")
        self.assertEqual(e.exception.status_code, 404)

    def test_unknown_model_is_404(self):
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.chat(model="nope:1b", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(e.exception.status_code, 404)
        self.assertIn("not installed", e.exception.error)


class OpenAIClientTest(unittest.TestCase):
    def setUp(self):
        self.client = openai.OpenAI(base_url=f"{SERVER.url}/v1", api_key="unused")

    def test_models_list(self):
        ids = [m.id for m in self.client.models.list().data]
        self.assertIn(MODEL, ids)

    def test_chat_completion(self):
        r = self.client.chat.completions.create(
            model=MODEL, temperature=0, max_tokens=32,
            messages=[{"role": "system", "content": "You are brief."},
                      {"role": "user", "content": "Name a color."}])
        choice = r.choices[0]
        self.assertTrue(choice.message.content.strip())
        self.assertIn(choice.finish_reason, ("stop", "length"))
        self.assertLessEqual(r.usage.completion_tokens, 32)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    def test_streaming_chat_completion(self):
        stream = self.client.chat.completions.create(
            model=MODEL, temperature=0, max_tokens=32, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Count to five."}])
        text, finish, usage = "", None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        self.assertTrue(text.strip())
        self.assertIn(finish, ("stop", "length"))
        self.assertIsNotNone(usage)
        self.assertGreater(usage.completion_tokens, 0)

    def test_unknown_model_is_not_found(self):
        with self.assertRaises(openai.NotFoundError) as e:
            self.client.chat.completions.create(model="nope:1b", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(e.exception.status_code, 404)
        self.assertIn("not installed", str(e.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
