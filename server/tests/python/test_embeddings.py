"""Embeddings through the clients people build retrieval with, unchanged,
against the real binary and the real all-MiniLM-L6-v2 (issue 14): the
official `ollama` package (`embed`, `embeddings`), the official `openai`
package (`embeddings.create`, which asks for base64 unless told otherwise,
and floats), and LangChain's `OllamaEmbeddings` (`langchain-ollama`).
Vectors are checked against the sentence-transformers reference committed
in server/tests/embeddings/reference.json.

Run by scripts/test.sh inside a virtualenv; needs KINKO_BIN and KINKO_HOME
(with smollm2:135m and all-minilm:latest installed).
"""
import json
import math
import os
import unittest

import ollama
import openai
from langchain_ollama import OllamaEmbeddings

from kinko_server import EMBED_MODEL, MODEL, module_fixture


SERVER = None
setUpModule, tearDownModule = module_fixture(globals())

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "embeddings", "reference.json")) as f:
    REFERENCE = json.load(f)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


DOCS = [
    "The cat sleeps on the warm windowsill.",
    "A kitten naps in the sun by the window.",
    "Interest rates rose again this quarter.",
]


class OllamaEmbedTest(unittest.TestCase):
    def setUp(self):
        self.client = ollama.Client(host=SERVER.url)

    def test_embed_matches_sentence_transformers(self):
        r = self.client.embed(model="all-minilm", input=REFERENCE["texts"])
        self.assertEqual(r.model, EMBED_MODEL)
        self.assertEqual(len(r.embeddings), len(REFERENCE["texts"]))
        worst = min(cosine(a, b) for a, b in zip(r.embeddings, REFERENCE["vectors"]))
        print(f"\nlowest cosine to sentence-transformers through /api/embed: {worst:.7f}")
        self.assertGreaterEqual(worst, 0.999)
        for v in r.embeddings:
            self.assertEqual(len(v), 384)
            self.assertAlmostEqual(math.sqrt(sum(x * x for x in v)), 1.0, places=4)
        self.assertGreater(r.prompt_eval_count, len(REFERENCE["texts"]))
        self.assertGreater(r.total_duration, 0)

    def test_embed_ranks_meaning(self):
        v = self.client.embed(model="all-minilm", input=DOCS).embeddings
        self.assertGreater(cosine(v[0], v[1]), cosine(v[0], v[2]) + 0.3)

    def test_truncate_false_refuses_a_long_input(self):
        long = "word " * 400
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.embed(model="all-minilm", input=long, truncate=False)
        self.assertEqual(e.exception.status_code, 422)
        self.assertIn("402 tokens", e.exception.error)
        cut = self.client.embed(model="all-minilm", input=long)
        self.assertEqual(cut.prompt_eval_count, 256)

    def test_older_embeddings(self):
        old = self.client.embeddings(model="all-minilm", prompt=DOCS[0]).embedding
        new = self.client.embed(model="all-minilm", input=DOCS[0]).embeddings[0]
        self.assertEqual(len(old), 384)
        self.assertGreater(cosine(old, new), 0.9999)

    def test_kinds_stay_apart(self):
        listed = {m.model: m for m in self.client.list().models}
        self.assertIn(EMBED_MODEL, listed)
        shown = self.client.show("all-minilm")
        self.assertEqual(shown.capabilities, ["embedding"])
        self.assertEqual(self.client.show(MODEL).capabilities, ["completion"])
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.chat(model="all-minilm", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("embedding model", e.exception.error)
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.embed(model=MODEL, input="hi")
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("chat model", e.exception.error)
        running = [m.model for m in self.client.ps().models]
        self.client.embed(model="all-minilm", input="loaded")
        self.assertIn(EMBED_MODEL, [m.model for m in self.client.ps().models], running)


class OpenAiEmbedTest(unittest.TestCase):
    def setUp(self):
        self.client = openai.OpenAI(base_url=f"{SERVER.url}/v1", api_key="unused")

    def test_create_default_is_base64_and_matches_floats(self):
        # The client asks for base64 and decodes it itself.
        b = self.client.embeddings.create(model="all-minilm", input=DOCS)
        f = self.client.embeddings.create(model="all-minilm", input=DOCS, encoding_format="float")
        self.assertEqual(b.model, EMBED_MODEL)
        self.assertEqual([d.index for d in b.data], [0, 1, 2])
        for x, y in zip(b.data, f.data):
            self.assertEqual(len(x.embedding), 384)
            self.assertGreater(cosine(x.embedding, y.embedding), 0.99999)
        self.assertGreater(b.usage.prompt_tokens, 3)
        self.assertEqual(b.usage.total_tokens, b.usage.prompt_tokens)
        ref = self.client.embeddings.create(model="all-minilm", input=REFERENCE["texts"][0])
        self.assertGreaterEqual(cosine(ref.data[0].embedding, REFERENCE["vectors"][0]), 0.999)

    def test_refusals_are_clear(self):
        with self.assertRaises(openai.UnprocessableEntityError) as e:
            self.client.embeddings.create(model="all-minilm", input=[[101, 7592, 102]])
        self.assertIn("token arrays", str(e.exception))
        with self.assertRaises(openai.UnprocessableEntityError) as e:
            self.client.embeddings.create(model="all-minilm", input="x", dimensions=128)
        self.assertIn("cannot shorten", str(e.exception))
        with self.assertRaises(openai.NotFoundError):
            self.client.embeddings.create(model="no-such-model", input="x")
        ids = [m.id for m in self.client.models.list().data]
        self.assertIn(EMBED_MODEL, ids)


class LangChainTest(unittest.TestCase):
    def test_ollama_embeddings(self):
        emb = OllamaEmbeddings(model="all-minilm", base_url=SERVER.url)
        docs = emb.embed_documents(DOCS)
        query = emb.embed_query("Where is the cat sleeping?")
        self.assertEqual(len(docs), 3)
        self.assertEqual(len(query), 384)
        direct = ollama.Client(host=SERVER.url).embed(model="all-minilm", input=DOCS).embeddings
        for a, b in zip(docs, direct):
            self.assertGreater(cosine(a, b), 0.99999)
        # Retrieval: the query finds the cat documents first.
        ranked = sorted(range(3), key=lambda i: -cosine(query, docs[i]))
        self.assertEqual(sorted(ranked[:2]), [0, 1])


if __name__ == "__main__":
    unittest.main()
