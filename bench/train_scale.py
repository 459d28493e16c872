"""Training at real scale: `aitk finetune` against a plain transformers + peft script, LoRA and QLoRA.

    python bench/train_scale.py [--model qwen2.5-0.5b] [--steps 4] [--seq-len 256] [--methods lora qlora]
                                [--layers N]

One project on the catalog model's shape model (core/shapes.py, random weights, the real shape),
the device's default settings with LoRA r 16, the bundled Q/A rows, `--steps` optimizer steps.
For each method, `aitk finetune` (the whole job: Olive, export of the adapter left out) and a plain
script (the same model, data, template, sequence length, targets, batch, accumulation, dtype and
quantization, read from the project's generated Olive config) run as fresh processes one after
the other. Seconds per step: aitk's from its job's metrics (the first optimizer step logged after
training began, on to the last), the script's from the Trainer's train_runtime; end-to-end wall is
the process's, and the script evaluates the eval rows at its end as the job does. Goals (issue
17): s/step aitk / plain <= 1.1 for LoRA and QLoRA, end-to-end wall aitk / plain <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aitk.core import catalog, paths, shapes
from results import Row, emit

PLAIN = r"""
import json, sys, time, torch
from pathlib import Path
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, Trainer, TrainingArguments
model_path, data_dir, cfg, out = sys.argv[1], Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text()), sys.argv[4]
p = cfg["passes"]["finetune"]; ta = p["training_args"]
pre = cfg["data_configs"][0]["pre_process_data_config"]
tok = AutoTokenizer.from_pretrained(model_path)
kwargs = {"dtype": getattr(torch, p.get("torch_dtype") or "float32")}
if p["type"].lower() == "qlora":
    kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=p.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=p.get("double_quant", True),
        bnb_4bit_compute_dtype=getattr(torch, p.get("compute_dtype") or "float32"))
model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
if ta.get("gradient_checkpointing"):
    model.enable_input_require_grads()
model = get_peft_model(model, LoraConfig(r=p["r"], lora_alpha=p["alpha"], lora_dropout=p["lora_dropout"],
                                         target_modules=p["target_modules"], task_type="CAUSAL_LM"))
def load(name):
    rows = [json.loads(l) for l in open(data_dir / name)]
    texts = [pre["text_template"].format(**r) for r in rows]
    return Dataset.from_dict(tok(texts, truncation=True, max_length=pre["max_seq_len"]))
def collate(batch):
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(b["input_ids"]) for b in batch], batch_first=True,
                                          padding_value=tok.pad_token_id)
    mask = torch.nn.utils.rnn.pad_sequence([torch.tensor(b["attention_mask"]) for b in batch], batch_first=True)
    labels = ids.clone(); labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
args = TrainingArguments(output_dir=out, max_steps=ta["max_steps"],
    per_device_train_batch_size=ta["per_device_train_batch_size"],
    per_device_eval_batch_size=ta["per_device_eval_batch_size"],
    gradient_accumulation_steps=ta.get("gradient_accumulation_steps", 1),
    gradient_checkpointing=ta.get("gradient_checkpointing", False),
    learning_rate=ta["learning_rate"], lr_scheduler_type=ta["lr_scheduler_type"], logging_steps=ta["logging_steps"],
    save_strategy="no", seed=ta["seed"], data_seed=ta["data_seed"], report_to="none", optim="adamw_torch",
    disable_tqdm=True, use_cpu=True)
trainer = Trainer(model=model, args=args, train_dataset=load("train.jsonl"), eval_dataset=load("eval.jsonl"),
                  data_collator=collate)
result = trainer.train()
print(f"{{'train_runtime': {result.metrics['train_runtime']}}}")
trainer.evaluate()
"""

RUNTIME = re.compile(r"'train_runtime': ([0-9.]+)")
JOB = re.compile(r"job (\S+) \(finetune\) succeeded")


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """(wall seconds, output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "CI": "1"})
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took, proc.stdout + proc.stderr


def runtime(text: str) -> float:
    found = RUNTIME.findall(text)
    if not found:
        raise SystemExit(f"the plain script: no train_runtime in its output:\n{text[-2000:]}")
    return float(found[-1])


def job_runtime(text: str) -> float:
    """Seconds from the job's training start to its last logged step (its metrics.jsonl)."""
    found = JOB.findall(text)
    if not found:
        raise SystemExit(f"aitk finetune: no job id in its output:\n{text[-2000:]}")
    events = [json.loads(line) for line in (paths.data_dir() / "jobs" / found[-1] / "metrics.jsonl")
              .read_text().splitlines() if line.strip()]
    begin = next(e["t"] for e in events if e.get("event") == "begin")
    return max(e["t"] for e in events if "loss" in e) - begin


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--methods", nargs="+", default=["lora", "qlora"], choices=["lora", "qlora"])
    ap.add_argument("--layers", type=int, help="the shape model cut to N layers (a smoke run)")
    args = ap.parse_args()
    spec = shapes.spec_for(catalog.get(args.model), args.layers)
    shape = shapes.build_shape(spec)
    aitk = [sys.executable, "-m", "aitk.cli.main"]
    data = paths.bundled_data() / "tiny_qa"
    results = {}
    at = f"{args.steps} steps, seq {args.seq_len}"
    with tempfile.TemporaryDirectory(prefix="aitk-bench-train-") as tmp:
        for method in args.methods:
            project = Path(tmp) / method
            subprocess.run([*aitk, "project", "new", str(project), "--model", args.model,
                            "--dataset", str(data / "train.jsonl"), "--eval-dataset", str(data / "eval.jsonl"),
                            "--set", f"model.path={shape}", f"finetune.method={method}", "finetune.lora_r=16",
                            f"finetune.max_steps={args.steps}", f"data.source_max_len={args.seq_len}",
                            "finetune.logging_steps=1", f"finetune.eval_steps={10 * args.steps}",
                            f"finetune.save_steps={10 * args.steps}"],
                           check=True, stdout=subprocess.DEVNULL)
            config = project / "finetuning" / "olive-config.json"
            print(f"[bench] {method}: aitk finetune", file=sys.stderr, flush=True)
            a_wall, a_out = run([*aitk, "finetune", "-P", str(project), "--verbose"], project)
            print(f"[bench] {method}: plain script", file=sys.stderr, flush=True)
            p_wall, p_out = run([sys.executable, "-c", PLAIN, str(shape), str(project / "dataset"), str(config),
                                 str(Path(tmp) / f"plain-{method}")], project)
            r = results[method] = {"aitk_wall": a_wall, "plain_wall": p_wall,
                                   "aitk_step": job_runtime(a_out) / args.steps,
                                   "plain_step": runtime(p_out) / args.steps}
            step, wall = r["aitk_step"] / r["plain_step"], r["aitk_wall"] / r["plain_wall"]
            # Each method's rows as soon as it is measured: a run stopped during the next keeps them.
            emit(Row("train_scale", f"{method.upper()} s/step, aitk / plain script", step, "<= 1.1", spec.name, "x",
                     at),
                 Row("train_scale", f"{method.upper()} end-to-end wall, aitk / plain script", wall, "<= 1.15",
                     spec.name, "x", at),
                 Row("train_scale", f"{method.upper()} s/step, aitk", r["aitk_step"], "", spec.name, "s", at))
            print(f"[bench] {method}: {json.dumps(r)}", file=sys.stderr, flush=True)
    print(f"{spec.name} shape, {at}, LoRA r 16, device defaults")
    print(f"{'method':8}{'aitk s/step':>13}{'plain s/step':>14}{'ratio':>8}{'aitk wall':>11}{'plain wall':>12}{'ratio':>8}")
    for method, r in results.items():
        print(f"{method:8}{r['aitk_step']:13.2f}{r['plain_step']:14.2f}{r['aitk_step'] / r['plain_step']:8.3f}"
              f"{r['aitk_wall']:11.1f}{r['plain_wall']:12.1f}{r['aitk_wall'] / r['plain_wall']:8.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
