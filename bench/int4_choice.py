"""int4 block size and accuracy level, chosen by measurement: decode speed and fidelity to fp32.

    python bench/int4_choice.py [--layers 24] [--tokens 64] [--rounds 5] [--skip-tiny] [--json FILE]

Two models, each exported fp32 (the reference) and int4 with every candidate (block size,
accuracy level), all with aitk's own export code:
- Qwen2.5-0.5B's shape model (`aitk model build-shape`, random weights): decode tok/s, median of
  interleaved rounds (machine noise falls on every candidate alike), and the logits' error
  against fp32 on a fixed 128-token text: relative error ||int4 - fp32|| / ||fp32 - its mean||
  and top-1 agreement. Random weights have no outliers, so this measures the quantization grid,
  not a trained model's sensitivity; hence the second model.
- The embedded tiny model fine-tuned on its bundled facts (a real job, as `aitk demo` runs it),
  the adapter merged: eval loss of the held answers (their tokens' mean NLL given the chat
  prompt) and greedy exact answers, per candidate, against fp32.
Prints one table per model; the choice is the fastest candidate whose fidelity is within noise of
the most accurate one (see docs/int4.md for the recorded run and why).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Row, emit  # noqa: E402

from aitk.core.export import INT4_ACCURACY_LEVEL, INT4_BLOCK_SIZE  # noqa: E402

CANDIDATES = [(32, 4), (64, 4), (128, 4), (32, 1)]  # (block size, accuracy level); 4 = int8 compute, 1 = fp32
CHOSEN = (INT4_BLOCK_SIZE, INT4_ACCURACY_LEVEL)
PROMPT = [{"role": "user", "content": "Tell me a long story about the capital of Vozai."}]


def _name(c) -> str:
    return "fp32" if c is None else f"int4 b{c[0]} a{c[1]}"


def export_all(model: str, out: Path) -> dict:
    """fp32 and every candidate; the builders' output goes to out/export.log, not the tables."""
    from aitk.core.export import export_model

    out.mkdir(parents=True)
    with open(out / "export.log", "w") as log, contextlib.redirect_stdout(log):
        dirs = {None: export_model(model, None, out / "fp32", precision="fp32")}
        for c in CANDIDATES:
            print(f"[bench] export {_name(c)} of {model}", file=sys.stderr, flush=True)
            dirs[c] = export_model(model, None, out / f"b{c[0]}-a{c[1]}", precision="int4", int4=c)
    return dirs


def prompt_logits(model_dir: Path, ids: list[int]):
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 1)
    gen = og.Generator(model, params)
    gen.append_tokens(np.array(ids, dtype=np.int32))
    return np.array(gen.get_output("logits"))[0].astype("float64")


def fidelity(dirs: dict, ids: list[int]) -> dict:
    ref = prompt_logits(dirs[None], ids)
    centred = ref - ref.mean(axis=-1, keepdims=True)
    out = {}
    for c, d in dirs.items():
        if c is None:
            continue
        q = prompt_logits(d, ids)
        out[c] = {"rel_error": float(((q - ref) ** 2).sum() ** 0.5 / (centred ** 2).sum() ** 0.5),
                  "top1_agree": float((q.argmax(-1) == ref.argmax(-1)).mean())}
    return out


def speeds(dirs: dict, tokens: int, rounds: int) -> dict:
    from aitk.core.chat import GenaiChatEngine, GenerationOptions

    engines = {c: GenaiChatEngine(d) for c, d in dirs.items()}
    opts = GenerationOptions(max_new_tokens=tokens)
    got: dict = {c: [] for c in engines}
    for e in engines.values():
        e.stream(PROMPT, opts).read()  # warm-up
    for _ in range(rounds):
        for c, e in engines.items():
            s = e.stream(PROMPT, opts)
            s.read()
            got[c].append(s.tokens_per_second)
    return {c: statistics.median(v) for c, v in got.items()}


def shape_part(args, tmp: Path) -> dict:
    from aitk.core import catalog, shapes, tiny

    spec = shapes.spec_for(catalog.get("qwen2.5-0.5b"), layers=args.layers)
    model = shapes.build_shape(spec, tmp / "shape-hf")
    dirs = export_all(str(model), tmp / "shape")
    tok, _ = tiny.build_tokenizer()
    text = " ".join(tiny.tokenizer_corpus())
    ids = tok(text)["input_ids"][:128]
    fid = fidelity(dirs, ids)
    tps = speeds(dirs, args.tokens, args.rounds)
    rows = []
    print(f"\nQwen2.5-0.5B shape ({spec.layers} layers, random weights), {args.tokens} new tokens, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'export':<16}{'tok/s':>8}{'x chosen':>10}{'rel. logit err':>16}{'top-1 = fp32':>14}")
    for c, v in tps.items():
        f = fid.get(c, {"rel_error": 0.0, "top1_agree": 1.0})
        rows.append({"export": _name(c), "tok_s": v, "rel_error": f["rel_error"], "top1_agree": f["top1_agree"]})
        print(f"{_name(c):<16}{v:>8.1f}{v / tps[CHOSEN]:>10.3f}{f['rel_error']:>16.4f}{f['top1_agree']:>14.3f}")
    shape = spec.name
    emit(*(Row("int4_choice", f"{r['export']} decode", r["tok_s"], shape=shape, unit="tok/s",
               note=f"logit err {r['rel_error']:.3f}") for r in rows),
         Row("int4_choice", f"chosen ({_name(CHOSEN)}) / fastest int4 decode",
             tps[CHOSEN] / max(v for c, v in tps.items() if c is not None), shape=shape, unit="x",
             note="what the chosen block size costs in speed"))
    return {"layers": spec.layers, "rows": rows}


def train_tiny(tmp: Path) -> tuple[Path, Path, list[dict]]:
    """The tiny model fine-tuned on its facts through the jobs facade (as `aitk demo`)."""
    for name in ("DATA", "CONFIG", "CACHE", "PROJECTS"):
        os.environ[f"AITK_{name}_DIR"] = str(tmp / "aitk" / name.lower())
    from aitk.cli.demo import held_questions
    from aitk.core.project import create_project
    from aitk.providers.jobs import Jobs

    project = create_project(tmp / "tiny-project")
    jobs = Jobs()
    ft, export = jobs.start_training(project.root, then_evaluate=False)
    for job in (ft, export):
        while not (rec := jobs.status(job.id)).is_final:
            time.sleep(0.2)
        if rec.status != "succeeded":
            raise SystemExit(f"{rec.kind} {rec.status}: {rec.error} (log: {jobs.store.log_path(job.id)})")
    return Path(project.base_model_path()), project.adapter_dir, held_questions(64)


def answer_loss(model_dir: Path, rows: list[dict]) -> float:
    """Mean NLL of each held answer's tokens after its chat prompt, the answer tokenized in place
    (the prompt + answer text as one, so the tokens are the ones the model sees in context; the
    end-of-turn token is left out: which one ends a turn is the chat template's, not the data's)."""
    import numpy as np
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    total, count = 0.0, 0
    for r in rows:
        prompt = tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                         add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(prompt + r["answer"], add_special_tokens=False)["input_ids"]
        assert ids[:len(p_ids)] == p_ids, "the prompt tokenizes differently in front of its answer"
        logits = prompt_logits(model_dir, ids)
        for i in range(len(p_ids), len(ids)):
            row = logits[i - 1]
            total += float(np.logaddexp.reduce(row) - row[ids[i]])
            count += 1
    return total / count


def tiny_part(tmp: Path) -> dict:
    from aitk.cli.demo import score
    from aitk.core.chat import GenaiChatEngine
    from aitk.core.export import merge_adapter

    base, adapter, rows = train_tiny(tmp)
    merged = merge_adapter(str(base), adapter, tmp / "tiny-merged")
    dirs = export_all(str(merged), tmp / "tiny")
    out = []
    print(f"\nthe tiny model fine-tuned on its facts, merged: {len(rows)} held answers")
    print(f"{'export':<16}{'answer loss':>12}{'ppl':>8}{'exact':>8}")
    for c, d in dirs.items():
        loss = answer_loss(d, rows)
        ok, _ = score(GenaiChatEngine(d), rows, None)
        out.append({"export": _name(c), "answer_loss": loss, "exact": ok, "of": len(rows)})
        print(f"{_name(c):<16}{loss:>12.4f}{math.exp(loss):>8.3f}{ok:>5}/{len(rows)}")
    ref = out[0]["answer_loss"]
    emit(*(Row("int4_choice", f"{r['export']} answer loss / fp32", r["answer_loss"] / ref, unit="x",
               note=f"exact {r['exact']}/{r['of']}") for r in out[1:]))
    return {"rows": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=24, help="depth of the 0.5B shape model (default: all 24)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--skip-shape", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aitk-int4-bench-") as tmp:
        tmp = Path(tmp)
        result = {"candidates": [_name(c) for c in CANDIDATES]}
        if not args.skip_shape:
            result["shape"] = shape_part(args, tmp)
        if not args.skip_tiny:
            result["tiny"] = tiny_part(tmp)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
