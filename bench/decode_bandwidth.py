"""Decode against the machine's memory bandwidth: how close the int4 CPU export gets to its limit.

    python bench/decode_bandwidth.py [--shape qwen2.5-0.5b] [--tokens 128] [--repeats 5]

A decode step reads every weight a matmul uses once (and the KV cache so far), so on a CPU its
speed limit is bandwidth / bytes read per token. The bench measures the three terms:
- read bandwidth: a sum over a 1 GiB fp32 tensor (far beyond any cache) with 1 thread and with the
  machine's physical cores (torch's parallel reduction), best of 7: the figure a streaming read
  reaches here, which decode's scattered int4 blocks can only approach;
- bytes per token: the export's initializers that matmul-type nodes read (int4 weights, their
  scales and zero points; a tied embedding counted once, as the lm_head reads it), plus the KV
  cache at the answer's mean position; gather-only tables and the rotary caches are not read whole;
- decode tok/s after the first token (prefill excluded), median of --repeats, through the chat
  engine (the export's session options: this machine's physical cores) and through a bare
  onnxruntime-genai loop on the same files with the session options left at genai's defaults.
Fraction of the limit = tok/s x bytes per token / bandwidth. Goal: the engine >= 0.60 at the 0.5B
shape (issue 15 item 3).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Row, emit  # noqa: E402
from shape_model import int4_export  # noqa: E402

from aitk.core import threads  # noqa: E402
from aitk.core.chat import GenaiChatEngine, GenerationOptions  # noqa: E402

PROMPT = [{"role": "user", "content": "Tell me a long story about the capital of Vozai."}]
MATMUL_OPS = {"MatMulNBits", "MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul"}


def read_bandwidth(threads_: int, gib: float = 1.0, tries: int = 7) -> float:
    """Bytes/s of a streaming read (sum of a `gib` GiB fp32 tensor) with `threads_` threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads_)
    try:
        x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32)
        x.sum()  # pages touched, threads started
        best = float("inf")
        for _ in range(tries):
            t0 = time.perf_counter()
            x.sum()
            best = min(best, time.perf_counter() - t0)
        return x.numel() * 4 / best
    finally:
        torch.set_num_threads(before)


def weight_bytes_per_token(model_dir: Path) -> int:
    """Bytes of the initializers that matmul-type nodes read, each counted once."""
    import onnx

    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    sizes = {}
    for t in graph.initializer:
        length = next((int(e.value) for e in t.external_data if e.key == "length"), 0)
        sizes[t.name] = length or len(t.raw_data)
    read = {name for node in graph.node if node.op_type in MATMUL_OPS for name in node.input if name in sizes}
    return sum(sizes[name] for name in read)


def kv_bytes_per_token(model_dir: Path, position: float) -> float:
    """KV cache bytes one step reads at `position` (fp32 cache on CPU)."""
    d = json.loads((model_dir / "genai_config.json").read_text())["model"]["decoder"]
    return 2 * d["num_hidden_layers"] * d["num_key_value_heads"] * d["head_size"] * position * 4


def engine_decode(model_dir: Path, n: int):
    """The chat engine's own decode (core.chat.Batch, as `aitk chat` and `aitk serve` run it),
    timed per step: a random-weight model's tokens often detokenize to nothing, so the text
    pieces' timestamps would not say when tokens came."""
    engine = GenaiChatEngine(model_dir)

    def once() -> tuple[float, int]:
        answer = engine.prepare(PROMPT, GenerationOptions(max_new_tokens=n))
        batch = engine.start([answer])
        batch.step()  # the prompt and the first token
        t0, count = time.perf_counter(), 0
        while not batch.done:
            batch.step()
            count += 1
        return count / (time.perf_counter() - t0), answer.prompt_tokens

    return once


def bare_decode(model_dir: Path, n: int):
    """A plain genai loop on a copy of the export whose session options are genai's defaults."""
    import onnxruntime_genai as og

    plain = Path(tempfile.mkdtemp(prefix="aitk-bench-plain-"))
    for f in model_dir.iterdir():
        if f.name != "genai_config.json":
            (plain / f.name).symlink_to(f)
    config = json.loads((model_dir / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"].pop("intra_op_num_threads", None)
    (plain / "genai_config.json").write_text(json.dumps(config, indent=1))
    model = og.Model(str(plain))
    tok = og.Tokenizer(model)
    ids = tok.encode(tok.apply_chat_template(json.dumps(PROMPT), add_generation_prompt=True))

    def once() -> float:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        gen.generate_next_token()
        t0, count = time.perf_counter(), 0
        while not gen.is_done():
            gen.generate_next_token()
            gen.get_next_tokens()
            count += 1
        return count / (time.perf_counter() - t0)

    return once, plain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="qwen2.5-0.5b", help="a catalog model's shape model, int4")
    ap.add_argument("--layers", type=int, help="cut the shape to this many layers (a quick run)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model_dir = int4_export(args.shape, args.layers)
    cores = threads.physical_cores()
    bw = {t: read_bandwidth(t) for t in sorted({1, cores})}
    limit_bw = max(bw.values())
    engine = engine_decode(model_dir, args.tokens)
    bare, plain = bare_decode(model_dir, args.tokens)
    engine(), bare()  # warm-ups
    e_rates, b_rates, prompt = [], [], 0
    for _ in range(args.repeats):  # interleaved: drift falls on both
        rate, prompt = engine()
        e_rates.append(rate)
        b_rates.append(bare())
    shutil.rmtree(plain, ignore_errors=True)
    e_rate, b_rate = statistics.median(e_rates), statistics.median(b_rates)
    weights = weight_bytes_per_token(model_dir)
    per_token = weights + kv_bytes_per_token(model_dir, prompt + args.tokens / 2)
    ceiling = limit_bw / per_token
    shape = args.shape if not args.layers else f"{args.shape}/{args.layers}L"
    print(f"{shape} int4 CPU export: {weights / 1e6:.1f} MB of matmul weights, {per_token / 1e6:.1f} MB read per token")
    for t, b in bw.items():
        print(f"read bandwidth, {t} thread{'s' if t > 1 else ''}: {b / 1e9:.1f} GB/s")
    print(f"decode limit at {limit_bw / 1e9:.1f} GB/s: {ceiling:.1f} tok/s")
    print(f"engine ({threads.session_threads(json.loads((model_dir / 'genai_config.json').read_text()))} threads) "
          f"{e_rate:.1f} tok/s = {e_rate / ceiling:.2f} of the limit (goal >= 0.60)")
    print(f"bare genai, default session options {b_rate:.1f} tok/s = {b_rate / ceiling:.2f} of the limit")
    note = f"{per_token / 1e6:.0f} MB/token, {limit_bw / 1e9:.1f} GB/s"
    emit(Row("decode_bandwidth", "engine decode / bandwidth limit", e_rate / ceiling, ">= 0.6", shape, "x", note),
         Row("decode_bandwidth", "bare genai, default options / bandwidth limit", b_rate / ceiling, "", shape, "x",
             note),
         Row("decode_bandwidth", "read bandwidth", limit_bw / 1e9, "", shape, "GB/s", f"{cores} threads"))


if __name__ == "__main__":
    main()
