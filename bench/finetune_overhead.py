"""Training overhead: `aitk finetune` against `olive run` on the same generated config, and against
a plain transformers + peft Trainer on the same data, steps, sequence length and targets.

    python bench/finetune_overhead.py [--steps 600] [--rounds 3]
    python bench/finetune_overhead.py --shape qwen2.5-0.5b [--steps 5] [--shape-rounds 2] [--seq-len 256]
                                      [--methods lora,qlora]

Tiny mode (default): the embedded tiny model's default project (bundled dataset). Every run is a
fresh process, so imports count for each alike. The runs are interleaved (each round rotates the
order) and the ratio is the median of the rounds' ratios, so a load change on a shared machine
hits every side alike; each run's CPU seconds (its whole process tree, the detached job process
too) are shown next to its wall time, and a ratio of CPU seconds, which load barely moves.
Goal: aitk / olive run <= 1.05.

Shape mode (`--shape ID`): the catalog model's shape model (`aitk model build-shape ID`: real shape,
random weights), every sample padded to `--seq-len` tokens, gradient accumulation 1, no eval or
checkpoint inside the few steps (the Trainer's own final eval, on 2 rows, and final checkpoint
stay, on both sides). Per method, aitk and the plain Trainer run in ABBA order (`--shape-rounds 2`,
each side first once: the first run of a pair tends to step faster) and each side's figures are the
mean of its rounds; s/step is the median gap between the training loop's step logs after the first
(warm-up) step, read from aitk's metrics.jsonl and from the plain script's own callback alike. Goals (issues 15/17): s/step
aitk / plain <= 1.1 (tokens/s >= 0.97x is <= 1.031), end-to-end wall aitk / plain <= 1.15.

The last lines printed are the summary: `figure  value  goal  met`, one per figure.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Row, emit, table  # noqa: E402

PLAIN = r"""
import json, sys, time
T0 = time.time()
import torch
from pathlib import Path
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
root, cfg, timings = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), sys.argv[3]
model_path = cfg["input_model"]["model_path"]
model_path = model_path if Path(model_path).is_absolute() else str(root / model_path)
p = cfg["passes"]["finetune"]; ta = p["training_args"]
pre = cfg["data_configs"][0]["pre_process_data_config"]
tok = AutoTokenizer.from_pretrained(model_path)
dtype = getattr(torch, p.get("torch_dtype", "float32"))
kwargs = {"dtype": dtype}
if p["type"] == "QLoRA":
    from transformers import BitsAndBytesConfig
    kwargs["quantization_config"] = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=p["quant_type"], bnb_4bit_use_double_quant=p["double_quant"],
        bnb_4bit_compute_dtype=getattr(torch, p["compute_dtype"]))
model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
targets = p.get("target_modules")
if p["type"] == "QLoRA":  # as Olive's QLoRA: every 4-bit linear layer
    import bitsandbytes as bnb
    targets = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)})
for w in model.parameters():
    w.requires_grad = False
model = get_peft_model(model, LoraConfig(r=p["r"], lora_alpha=p["alpha"], lora_dropout=p["lora_dropout"],
                                         target_modules=targets, task_type="CAUSAL_LM"))
def load(name):
    rows = [json.loads(l) for l in open(root / "dataset" / name)]
    texts = [pre["text_template"].format(**r) for r in rows]
    return Dataset.from_dict(tok(texts, truncation=True, max_length=pre["max_seq_len"],
                                 padding="max_length" if pre.get("pad_to_max_len") else False))
def collate(batch):
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(b["input_ids"]) for b in batch], batch_first=True,
                                          padding_value=tok.pad_token_id)
    mask = torch.nn.utils.rnn.pad_sequence([torch.tensor(b["attention_mask"]) for b in batch], batch_first=True)
    labels = ids.clone(); labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
marks = {"start": T0, "logs": []}
class Times(TrainerCallback):  # the same events aitk's metrics callback stamps
    def on_train_begin(self, args, state, control, **kw): marks["begin"] = time.time()
    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs: marks["logs"].append([state.global_step, time.time()])
    def on_train_end(self, args, state, control, **kw): marks["end"] = time.time()
args = TrainingArguments(output_dir=str(root / "plain-ckpt"), max_steps=ta["max_steps"],
    per_device_train_batch_size=ta["per_device_train_batch_size"], per_device_eval_batch_size=ta["per_device_eval_batch_size"],
    gradient_accumulation_steps=ta["gradient_accumulation_steps"], gradient_checkpointing=ta["gradient_checkpointing"],
    learning_rate=ta["learning_rate"], lr_scheduler_type=ta["lr_scheduler_type"], logging_steps=ta["logging_steps"],
    eval_strategy="steps", eval_steps=ta["eval_steps"], save_steps=ta["save_steps"], save_total_limit=2,
    seed=ta["seed"], data_seed=ta["data_seed"], report_to="none", optim="adamw_torch", disable_tqdm=True)
Trainer(model=model, args=args, train_dataset=load("train.jsonl"), eval_dataset=load("eval.jsonl"),
        data_collator=collate, callbacks=[Times()]).train()
model.save_pretrained(root / "plain-adapter")
Path(timings).write_text(json.dumps(marks))
"""

PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Make this process the reaper of its descendants (Linux), so the detached job process that
    `aitk finetune` starts is waited for here and its CPU time lands in RUSAGE_CHILDREN."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap(timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def peak_rss_children() -> int:
    """The largest peak RSS of any process this one has waited for (bytes; monotonic)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def timed(cmd, cwd, env=None) -> tuple[float, float, str]:
    """(wall seconds until the command returns, CPU seconds of its whole tree, its stdout)."""
    _reap(0)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "CI": "1", **(env or {})})
    took = time.perf_counter() - t0
    _reap()  # the job process may outlive the CLI by a moment: the next run must not overlap it
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took, _children_cpu() - cpu0, proc.stdout


def load_avg() -> str:
    try:
        return "%.1f %.1f %.1f" % os.getloadavg()
    except OSError:
        return "?"


def summary(rows: list[tuple[str, float | None, str]], shape: str = "tiny") -> None:
    """The final table of `(figure, value, goal)`, also reported to `make bench` (bench/results.py)."""
    out = [Row("finetune_overhead", figure, value, goal, shape=shape, unit="x") for figure, value, goal in rows]
    print("\nsummary:\n" + table(out))
    emit(*out)


# --- tiny mode ----------------------------------------------------------------------------------


def tiny_mode(args, base: Path) -> None:
    from aitk.core.project import create_project, regenerate

    project = create_project(base / "p")
    project.settings.finetune.max_steps = args.steps
    regenerate(project)
    olive_copy = base / "olive-copy"
    shutil.copytree(project.root, olive_copy)
    bin_dir = Path(sys.executable).parent
    cmds = {
        "aitk finetune": ([str(bin_dir / "aitk"), "finetune"], project.root),
        "olive run --config": ([sys.executable, "-m", "olive", "run", "--config", "finetuning/olive-config.json"],
                               olive_copy),
        "transformers+peft Trainer": ([sys.executable, "-c", PLAIN, str(olive_copy),
                                       str(olive_copy / "finetuning/olive-config.json"), str(base / "plain.json")],
                                      olive_copy),
    }
    names = list(cmds)
    runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    print(f"{args.steps} steps, tiny model, bundled dataset (LoRA r{project.settings.finetune.lora_r}); "
          f"{args.rounds} interleaved rounds")
    for r in range(args.rounds):
        order = names[r % 3:] + names[:r % 3]
        for name in order:
            cmd, cwd = cmds[name]
            # Olive resumes from a checkpoint it finds in its output_dir: a later round would train
            # nothing. Every run starts clean (aitk gives each job its own folder anyway).
            for left in ("models/checkpoints", "models/olive", "plain-ckpt", "plain-adapter"):
                shutil.rmtree(olive_copy / left, ignore_errors=True)
            wall, cpu, _ = timed(cmd, cwd)
            runs[name].append((wall, cpu))
            print(f"  round {r + 1}  {name:28} {wall:7.1f} s wall  {cpu:7.1f} s cpu   (load {load_avg()})",
                  flush=True)
    a, o, t = (runs[n] for n in names)

    def ratio(x, y, i):
        return statistics.median(xx[i] / yy[i] for xx, yy in zip(x, y))

    rows = [("aitk finetune / olive run (wall, median of rounds)", ratio(a, o, 0), "<= 1.05"),
            ("aitk finetune / olive run (cpu s)", ratio(a, o, 1), "<= 1.05"),
            ("aitk finetune / plain Trainer (wall)", ratio(a, t, 0), "")]
    summary(rows)


# --- shape mode ---------------------------------------------------------------------------------


def _aitk(*argv, cwd=None) -> str:
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *argv], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"aitk {' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def step_gaps(log_times: list[tuple[int, float]]) -> list[float]:
    """Seconds per step between consecutive step logs."""
    return [(t2 - t1) / (s2 - s1) for (s1, t1), (s2, t2) in zip(log_times, log_times[1:]) if s2 > s1]


def step_seconds(log_times: list[tuple[int, float]]) -> float | None:
    """Median gap between consecutive step logs, the first step (warm-up) left out."""
    every = step_gaps(log_times)
    warm = every[1:] or every  # only two logs: the second step alone
    return statistics.median(warm) if warm else None


def gaps(log_times: list[tuple[int, float]]) -> str:
    """Every step's seconds, as printed beside the median (the spread says how far to trust it)."""
    return " ".join(f"{g:.1f}" for g in step_gaps(log_times))


def aitk_shape_run(project: Path) -> dict:
    t0 = time.time()
    wall, cpu, out = timed([sys.executable, "-m", "aitk.cli.main", "finetune", "-P", str(project)], project)
    log = next(line.rsplit("log: ", 1)[1].strip() for line in out.splitlines() if "log: " in line)
    job_dir = Path(log).parent
    records = [json.loads(x) for x in (job_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    begin = next(r["t"] for r in records if r.get("event") == "begin")
    logs = [(r["step"], r["t"]) for r in records if "loss" in r]
    size = sum(f.stat().st_size for f in job_dir.rglob("*") if f.is_file())
    return {"wall": wall, "cpu": cpu, "before_training": begin - t0, "s_per_step": step_seconds(logs),
            "gaps": gaps(logs), "job_dir_bytes": size, "peak_rss_so_far": peak_rss_children()}


def plain_shape_run(project: Path, timings: Path) -> dict:
    t0 = time.time()
    config = project / "finetuning" / "olive-config.json"
    wall, cpu, _ = timed([sys.executable, "-c", PLAIN, str(project), str(config), str(timings)], project)
    marks = json.loads(timings.read_text())
    logs = [tuple(x) for x in marks["logs"]]
    return {"wall": wall, "cpu": cpu, "before_training": marks["begin"] - t0,
            "s_per_step": step_seconds(logs), "gaps": gaps(logs), "peak_rss_so_far": peak_rss_children()}


def shape_model(model_id: str):
    """The catalog entry and its shape model's folder (built first if missing), in the user's
    data folder: built once, shared by every run of this bench."""
    from aitk.core import catalog, shapes

    entry = catalog.load().get(model_id)
    spec = shapes.spec_for(entry, None, 0)
    if not shapes.is_built(spec):
        print(f"building the {spec.name} shape model", flush=True)
        _aitk("model", "build-shape", entry.id)
    return entry, shapes.model_dir(spec)


def shape_mode(args, base: Path, entry, shape_dir: Path) -> None:
    steps, seq = args.steps, args.seq_len
    print(f"{entry.id} shape ({shape_dir}), {steps} steps, batch 1 x {seq} tokens (padded), accumulation 1, "
          f"gradient checkpointing as the CPU default; load at start {load_avg()}", flush=True)
    rows = []
    for i, method in enumerate(args.methods.split(",")):
        project = base / f"shape-{method}"
        sets = [f"model.path={shape_dir}", f"finetune.method={method}", f"finetune.max_steps={steps}",
                "finetune.gradient_accumulation_steps=1", "finetune.logging_steps=1",
                f"finetune.eval_steps={steps + 1}", f"finetune.save_steps={steps + 1}",
                f"data.source_max_len={seq}", "data.pad_to_max_len=true", "target.device=cpu"]
        _aitk("project", "new", str(project), "--model", entry.id, *sum((["--set", s] for s in sets), []))
        # The Trainer evaluates once at the end of a step-based run: 2 eval rows, not the bundled 40
        # (40 forward passes at this shape are minutes on 2 cores and time neither side's loop).
        evals = project / "dataset" / "eval.jsonl"
        evals.write_text("".join(evals.read_text().splitlines(keepends=True)[:2]))
        # ABBA: whichever side runs first here tends to step faster (seen both ways, up to 1.4x on
        # one pair), so each side runs first once per two rounds and the rounds are averaged.
        pair = ["aitk", "plain"] if i % 2 == 0 else ["plain", "aitk"]
        order = [side for r in range(args.shape_rounds) for side in (pair if r % 2 == 0 else pair[::-1])]
        runs: dict[str, list[dict]] = {"aitk": [], "plain": []}
        for side in order:
            r = (aitk_shape_run(project) if side == "aitk"
                 else plain_shape_run(project, base / f"plain-{method}.json"))
            runs[side].append(r)
            print(f"  {method:5} {side:5}  {r['wall']:7.1f} s wall  {r['cpu']:7.1f} s cpu  "
                  f"{r['before_training']:6.1f} s before training  {r['s_per_step'] or float('nan'):6.2f} s/step"
                  + f" (steps {r['gaps']})"
                  + (f"  job folder {r['job_dir_bytes'] / 1e6:.1f} MB" if "job_dir_bytes" in r else "")
                  + f"  peak RSS so far {r['peak_rss_so_far'] / 2**30:.2f} GiB   (load {load_avg()})", flush=True)
        res = {side: {k: statistics.mean(r[k] for r in rs) if all(r[k] for r in rs) else None
                      for k in ("wall", "cpu", "before_training", "s_per_step")} for side, rs in runs.items()}
        a, p = res["aitk"], res["plain"]
        step = a["s_per_step"] / p["s_per_step"] if a["s_per_step"] and p["s_per_step"] else None
        tokens = seq / a["s_per_step"] if a["s_per_step"] else None
        print(f"  {method} aitk tokens/s {tokens or float('nan'):.1f}; "
              f"plain {seq / p['s_per_step'] if p['s_per_step'] else float('nan'):.1f}")
        rows += [(f"{entry.id} {method.upper()} s/step aitk / plain", step, "<= 1.1"),
                 (f"{entry.id} {method.upper()} tokens/s aitk / plain", 1 / step if step else None, ">= 0.97"),
                 (f"{entry.id} {method.upper()} end-to-end wall aitk / plain", a["wall"] / p["wall"], "<= 1.15"),
                 (f"{entry.id} {method.upper()} end-to-end cpu s aitk / plain", a["cpu"] / p["cpu"], ""),
                 (f"{entry.id} {method.upper()} s before training aitk / plain",
                  a["before_training"] / p["before_training"], "")]
    summary(rows, entry.id)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, help="optimizer steps (tiny: 600, shape: 5)")
    ap.add_argument("--rounds", type=int, default=3, help="tiny mode: interleaved rounds")
    ap.add_argument("--shape-rounds", type=int, default=2, help="shape mode: rounds per method, ABBA order")
    ap.add_argument("--shape", metavar="ID", help="a catalog model: train its shape model instead of the tiny one")
    ap.add_argument("--seq-len", type=int, default=256, help="shape mode: tokens per sample")
    ap.add_argument("--methods", default="lora,qlora", help="shape mode: comma-separated")
    args = ap.parse_args()
    args.steps = args.steps or (5 if args.shape else 600)  # shape: 3 step gaps, the first left out
    if not adopt_orphans():
        print("(no subreaper on this OS: the cpu seconds miss the detached job process)")
    shape = shape_model(args.shape) if args.shape else None
    base = Path(tempfile.mkdtemp(prefix="aitk-bench-"))
    os.environ.setdefault("AITK_DATA_DIR", str(base / "data"))  # jobs and their history: throwaway
    try:
        shape_mode(args, base, *shape) if shape else tiny_mode(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
