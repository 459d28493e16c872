"""Wall time of `aitk finetune` over `olive run` on the same generated config, and over a plain
transformers + peft Trainer on the same data and steps.

    python bench/finetune_overhead.py [--steps 600]

All three run as fresh processes on the embedded tiny model's default project (the bundled
dataset, LoRA r64, batch 16), so imports are counted for each alike. Goal: aitk/olive <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aitk.core.project import create_project, regenerate
from results import Row, emit

PLAIN = r"""
import json, sys, torch
from pathlib import Path
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
root, cfg = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
p = cfg["passes"]["finetune"]; ta = p["training_args"]
pre = cfg["data_configs"][0]["pre_process_data_config"]
tok = AutoTokenizer.from_pretrained(root / "model")
model = AutoModelForCausalLM.from_pretrained(root / "model")
model = get_peft_model(model, LoraConfig(r=p["r"], lora_alpha=p["alpha"], lora_dropout=p["lora_dropout"],
                                         target_modules=p["target_modules"], task_type="CAUSAL_LM"))
def load(name):
    rows = [json.loads(l) for l in open(root / "dataset" / name)]
    texts = [pre["text_template"].format(**r) for r in rows]
    return Dataset.from_dict(tok(texts, truncation=True, max_length=pre["max_seq_len"]))
def collate(batch):
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(b["input_ids"]) for b in batch], batch_first=True,
                                          padding_value=tok.pad_token_id)
    mask = torch.nn.utils.rnn.pad_sequence([torch.tensor(b["attention_mask"]) for b in batch], batch_first=True)
    labels = ids.clone(); labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
args = TrainingArguments(output_dir=str(root / "plain-ckpt"), max_steps=ta["max_steps"],
    per_device_train_batch_size=ta["per_device_train_batch_size"], per_device_eval_batch_size=ta["per_device_eval_batch_size"],
    learning_rate=ta["learning_rate"], lr_scheduler_type=ta["lr_scheduler_type"], logging_steps=ta["logging_steps"],
    eval_strategy="steps", eval_steps=ta["eval_steps"], save_steps=ta["save_steps"], seed=ta["seed"],
    data_seed=ta["data_seed"], report_to="none", optim="adamw_torch", disable_tqdm=True)
Trainer(model=model, args=args, train_dataset=load("train.jsonl"), eval_dataset=load("eval.jsonl"),
        data_collator=collate).train()
model.save_pretrained(root / "plain-adapter")
"""


def timed(cmd, cwd) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "CI": "1"})
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="aitk-bench-"))
    os.environ.setdefault("AITK_DATA_DIR", str(base / "data"))
    project = create_project(base / "p")
    project.settings.finetune.max_steps = args.steps
    regenerate(project)
    olive_copy = base / "olive-copy"
    shutil.copytree(project.root, olive_copy)

    bin_dir = Path(sys.executable).parent
    results = {
        "aitk finetune": timed([str(bin_dir / "aitk"), "finetune"], project.root),
        "olive run --config": timed([sys.executable, "-m", "olive", "run", "--config",
                                     "finetuning/olive-config.json"], olive_copy),
        "transformers+peft Trainer": timed([sys.executable, "-c", PLAIN, str(olive_copy),
                                            str(olive_copy / "finetuning/olive-config.json")], olive_copy),
    }
    print(f"{args.steps} steps, tiny model, bundled dataset ({json.dumps(project.settings.finetune.lora_r)} rank)")
    for name, took in results.items():
        print(f"{name:28} {took:7.1f} s")
    a, o, t = results.values()
    print(f"aitk / olive run       = {a / o:.3f}   (goal <= 1.05)")
    print(f"aitk / plain Trainer   = {a / t:.3f}")
    emit(Row("finetune_overhead", "aitk finetune / olive run (wall)", a / o, "<= 1.05", unit="x"),
         Row("finetune_overhead", "aitk finetune / plain Trainer (wall)", a / t, unit="x"))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
