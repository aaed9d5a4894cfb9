"""Structured outputs, capability refusals and the legacy completions API
against the real kinko binary and the real default model, through the
official `ollama` and `openai` Python packages and LangChain.

Every structured answer is sampled (temperature 0.8, not greedy) and must
parse and validate against its schema, every time: generation is
constrained by the schema's grammar, so this is no matter of luck. Each
group prints how many of its answers validated.

Run by scripts/test.sh inside a virtualenv; needs KINKO_BIN and KINKO_HOME
(with smollm2:135m installed).
"""
import json
import unittest
import urllib.error
import urllib.request

import jsonschema
import ollama
import openai
from langchain_ollama import ChatOllama
from pydantic import BaseModel

from kinko_server import MODEL, module_fixture


SERVER = None
setUpModule, tearDownModule = module_fixture(globals())

RUNS = 10
SAMPLED = {"temperature": 0.8, "top_p": 0.95, "num_predict": 256}

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "likes_tea": {"type": "boolean"},
    },
    "required": ["name", "age", "likes_tea"],
    "additionalProperties": False,
}

COLOURS = {
    "type": "object",
    "properties": {
        "colours": {
            "type": "array",
            "items": {"type": "string", "enum": ["red", "green", "blue"]},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["colours"],
}


class City(BaseModel):
    """A city and its country."""
    city: str
    country: str
    population_millions: float


def report(what, valid, total):
    print(f"\n    structured output, {what}: {valid}/{total} valid", flush=True)


class OllamaStructuredTest(unittest.TestCase):
    def setUp(self):
        self.client = ollama.Client(host=SERVER.url)

    def test_a_json_schema_format_always_validates(self):
        valid = 0
        for i in range(RUNS):
            r = self.client.chat(
                model=MODEL,
                messages=[{"role": "user", "content": "Describe a person as JSON."}],
                format=PERSON, options=SAMPLED)
            data = json.loads(r.message.content)
            jsonschema.validate(data, PERSON)
            valid += 1
        report("ollama chat, format=<schema>", valid, RUNS)

    def test_format_json_always_parses_as_an_object(self):
        valid = 0
        for i in range(RUNS):
            r = self.client.generate(
                model=MODEL, prompt="List three fruits as JSON.", format="json", options=SAMPLED)
            self.assertIsInstance(json.loads(r.response), dict)
            valid += 1
        report("ollama generate, format=\"json\"", valid, RUNS)

    def test_a_streamed_enum_array_validates(self):
        valid = 0
        for i in range(RUNS):
            text = "".join(
                part.message.content for part in self.client.chat(
                    model=MODEL, messages=[{"role": "user", "content": "Pick colours."}],
                    format=COLOURS, options=SAMPLED, stream=True))
            jsonschema.validate(json.loads(text), COLOURS)
            valid += 1
        report("ollama chat streamed, enum array schema", valid, RUNS)

    def test_an_unfollowable_format_is_refused(self):
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                             format={"type": "nothing-like-this"})
        self.assertEqual(e.exception.status_code, 422)
        # The client itself refuses a format other than "json" or a schema:
        # send it as another client might.
        req = urllib.request.Request(
            SERVER.url + "/api/generate", method="POST",
            data=json.dumps({"model": MODEL, "prompt": "hi", "format": "yaml"}).encode())
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        self.assertEqual(e.exception.code, 422)
        self.assertIn("invalid format", json.loads(e.exception.read())["error"])


class LangChainStructuredTest(unittest.TestCase):
    def test_with_structured_output_always_gives_the_model(self):
        llm = ChatOllama(model=MODEL, base_url=SERVER.url, temperature=0.8, num_predict=256)
        structured = llm.with_structured_output(City)
        valid = 0
        for i in range(RUNS):
            city = structured.invoke("Name a large city.")
            self.assertIsInstance(city, City)
            valid += 1
        report("LangChain ChatOllama.with_structured_output(pydantic)", valid, RUNS)


class OpenAIStructuredTest(unittest.TestCase):
    def setUp(self):
        self.client = openai.OpenAI(base_url=f"{SERVER.url}/v1", api_key="unused")

    def test_response_format_json_schema_always_validates(self):
        valid = 0
        for i in range(RUNS):
            r = self.client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Describe a person."}],
                temperature=0.8, max_tokens=256,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
            jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
            valid += 1
        report("openai chat, response_format=json_schema", valid, RUNS)

    def test_response_format_json_object_always_parses(self):
        valid = 0
        for i in range(RUNS):
            r = self.client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Give me JSON."}],
                temperature=0.8, max_tokens=256, response_format={"type": "json_object"})
            self.assertIsInstance(json.loads(r.choices[0].message.content), dict)
            valid += 1
        report("openai chat, response_format=json_object", valid, RUNS)


class CapabilityTest(unittest.TestCase):
    """smollm2's chat template takes no tools and it neither thinks nor
    sees: requests that need that are refused with Ollama's 400."""

    TOOL = {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}

    def setUp(self):
        self.client = ollama.Client(host=SERVER.url)

    def test_show_says_what_the_model_can_do(self):
        shown = self.client.show(MODEL)
        self.assertEqual(shown.capabilities, ["completion"])
        # The template that formats its prompts: the GGUF's own.
        self.assertIn("<|im_start|>", shown.template)
        info = shown.modelinfo
        for key in ("general.architecture", "general.parameter_count",
                    "llama.context_length", "llama.embedding_length"):
            self.assertIn(key, info)
        self.assertEqual(info["llama.embedding_length"], 576)
        self.assertGreater(info["general.parameter_count"], 100_000_000)
        self.assertIsNotNone(shown.modified_at)

    def test_tools_thinking_and_images_are_refused(self):
        msg = [{"role": "user", "content": "Weather in Paris?"}]
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.chat(model=MODEL, messages=msg, tools=[self.TOOL])
        self.assertEqual(e.exception.status_code, 400)
        self.assertEqual(e.exception.error, f"{MODEL} does not support tools")
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.chat(model=MODEL, messages=msg, think=True)
        self.assertEqual(e.exception.status_code, 400)
        self.assertEqual(e.exception.error, f'"{MODEL}" does not support thinking')
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.chat(model=MODEL, messages=[dict(msg[0], images=["aGVsbG8="])])
        self.assertEqual(e.exception.status_code, 400)
        self.assertEqual(e.exception.error, f"{MODEL} does not support vision")
        # `think: false` asks nothing and is answered.
        r = self.client.chat(model=MODEL, messages=msg, think=False, options={"num_predict": 4})
        self.assertTrue(r.done)

    def test_openai_tools_are_refused_and_tool_choice_none_is_honoured(self):
        client = openai.OpenAI(base_url=f"{SERVER.url}/v1", api_key="unused")
        msg = [{"role": "user", "content": "Weather in Paris?"}]
        with self.assertRaises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=msg, tools=[self.TOOL])
        self.assertIn("does not support tools", str(e.exception))
        r = client.chat.completions.create(model=MODEL, messages=msg, tools=[self.TOOL],
                                           tool_choice="none", max_tokens=4)
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertTrue(r.choices[0].message.content)


class LegacyCompletionsTest(unittest.TestCase):
    def setUp(self):
        self.client = openai.OpenAI(base_url=f"{SERVER.url}/v1", api_key="unused")

    def test_a_prompt_in_text_out(self):
        r = self.client.completions.create(model=MODEL, prompt="The capital of France is",
                                           max_tokens=8, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertTrue(r.choices[0].text)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(r.usage.completion_tokens, 0)

    def test_streamed(self):
        chunks = list(self.client.completions.create(
            model=MODEL, prompt="Count: one, two,", max_tokens=8, temperature=0, stream=True))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertTrue(text)
        self.assertIn(chunks[-1].choices[0].finish_reason, ("stop", "length"))

    def test_guard_rails_hold(self):
        with self.assertRaises(openai.UnprocessableEntityError):
            self.client.completions.create(model=MODEL, prompt="hi", max_tokens=10_000_000)
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="nope:1b", prompt="hi")
        with self.assertRaises(openai.UnprocessableEntityError):
            self.client.completions.create(model=MODEL, prompt="hi", echo=True)


class ProbeTest(unittest.TestCase):
    def test_root_answers_ollama_is_running_to_clients_and_the_page_to_browsers(self):
        with urllib.request.urlopen(SERVER.url + "/") as r:
            self.assertEqual(r.read().decode(), "Ollama is running")
            self.assertTrue(r.headers["Content-Type"].startswith("text/plain"))
        req = urllib.request.Request(SERVER.url + "/", method="HEAD")
        with urllib.request.urlopen(req) as r:
            self.assertEqual(r.status, 200)
        req = urllib.request.Request(SERVER.url + "/", headers={"Accept": "text/html,*/*"})
        with urllib.request.urlopen(req) as r:
            self.assertIn("<html", r.read().decode().lower())


if __name__ == "__main__":
    unittest.main()
