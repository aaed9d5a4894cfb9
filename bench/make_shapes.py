#!/usr/bin/env python3
"""GGUF files in the shapes of SmolLM2-360M and SmolLM2-1.7B for the
benchmark, with no model hub: the tokenizer and chat template come from the
installed SmolLM2-135M GGUF, the weights are random Q8_0 (same layout and
byte count as the real models, so the speed is the real models' speed).

The end-of-sequence rows of the output weights (every control token, among
them <|im_end|> and <|endoftext|>) are zero, so their logits are 0 while the
largest of 49,000 random logits is positive: greedy decoding never stops
early, and every run generates exactly the tokens asked for.

    make_shapes.py SOURCE.gguf OUT_DIR [--only 360m,1.7b] [--seed 9]

Writes OUT_DIR/smollm2-360m-shape.Q8_0.gguf and
OUT_DIR/smollm2-1.7b-shape.Q8_0.gguf (skipped when already there). Needs the
PyPI packages gguf and numpy.
"""
import argparse
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

# Shapes from the published SmolLM2 configs (llama architecture, head size 64).
SHAPES = {
    "360m": dict(hidden=960, ffn=2560, layers=32, heads=15, kv_heads=5, rope_base=100000.0),
    "1.7b": dict(hidden=2048, ffn=8192, layers=24, heads=32, kv_heads=32, rope_base=130000.0),
}
Q8_0_BLOCK, Q8_0_BYTES = 32, 34
CONTROL = 3  # llama.cpp's token type for control tokens
INIT_STD = 0.02


def q8_0(rows, cols, rng, zero_rows=()):
    """Random Q8_0 bytes for a (rows, cols) matrix: per block of 32, an f16
    scale and 32 int8 values, elements with standard deviation INIT_STD."""
    blocks = cols // Q8_0_BLOCK
    out = np.empty((rows, blocks, Q8_0_BYTES), dtype=np.uint8)
    # Uniform int8 in [-127, 127] has standard deviation 127/sqrt(3).
    scale = np.float16(INIT_STD / (127 / np.sqrt(3)))
    out[:, :, :2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
    out[:, :, 2:] = rng.integers(-127, 128, size=(rows, blocks, Q8_0_BLOCK), dtype=np.int8).view(np.uint8)
    for r in zero_rows:
        out[r] = 0
    return out.reshape(rows, blocks * Q8_0_BYTES)


def source_fields(reader):
    """The tokenizer keys of the source file, as (key, value, type, sub_type)."""
    out = []
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY else None
        value = field.contents()
        out.append((name, value, main, sub))
    return out


def write_shape(source, path, shape, seed):
    reader = GGUFReader(source)
    fields = source_fields(reader)
    vocab = len(reader.fields["tokenizer.ggml.tokens"].contents())
    types = reader.fields.get("tokenizer.ggml.token_type")
    control = [i for i, t in enumerate(types.contents()) if t == CONTROL] if types else []
    eos = reader.fields.get("tokenizer.ggml.eos_token_id")
    if eos is not None:
        control.append(int(eos.contents()))
    h, f, n_layers = shape["hidden"], shape["ffn"], shape["layers"]
    head_dim = h // shape["heads"]
    kv_dim = head_dim * shape["kv_heads"]

    w = GGUFWriter(path, "llama")
    w.add_name(os.path.basename(path).split(".")[0])
    w.add_file_type(7)  # mostly Q8_0
    w.add_context_length(8192)
    w.add_embedding_length(h)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(f)
    w.add_head_count(shape["heads"])
    w.add_head_count_kv(shape["kv_heads"])
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(shape["rope_base"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    for name, value, main, sub in fields:
        w.add_key_value(name, value, main, sub_type=sub)

    # (name, rows, cols) of every matrix, in file order; norms are F32 ones.
    mats = [("token_embd.weight", vocab, h)]
    for i in range(n_layers):
        b = f"blk.{i}."
        mats += [(b + "attn_norm.weight", None, h), (b + "attn_q.weight", h, h), (b + "attn_k.weight", kv_dim, h),
                 (b + "attn_v.weight", kv_dim, h), (b + "attn_output.weight", h, h),
                 (b + "ffn_norm.weight", None, h), (b + "ffn_gate.weight", f, h), (b + "ffn_up.weight", f, h),
                 (b + "ffn_down.weight", h, f)]
    mats += [("output_norm.weight", None, h), ("output.weight", vocab, h)]
    for name, rows, cols in mats:
        if rows is None:
            w.add_tensor_info(name, (cols,), np.dtype(np.float32), cols * 4)
        else:
            nbytes = rows * cols // Q8_0_BLOCK * Q8_0_BYTES
            w.add_tensor_info(name, (rows, cols // Q8_0_BLOCK * Q8_0_BYTES), np.dtype(np.uint8), nbytes,
                              raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, rows, cols in mats:
        if rows is None:
            w.write_tensor_data(np.ones(cols, dtype=np.float32))
        else:
            zero = control if name == "output.weight" else ()
            w.write_tensor_data(q8_0(rows, cols, rng, zero))
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="the installed SmolLM2-135M GGUF (tokenizer and template)")
    ap.add_argument("out_dir")
    ap.add_argument("--only", default="360m,1.7b")
    ap.add_argument("--seed", type=int, default=9)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    for size in a.only.split(","):
        path = os.path.join(a.out_dir, f"smollm2-{size}-shape.Q8_0.gguf")
        if os.path.exists(path):
            print(f"{path} is there")
            continue
        tmp = path + ".partial"
        write_shape(a.source, tmp, SHAPES[size], a.seed)
        os.replace(tmp, path)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.0f} MB)")


if __name__ == "__main__":
    sys.exit(main())
