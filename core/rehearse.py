"""Rehearsal: a few training steps of a project's real settings on its base model's shape model.

Before a run that may take hours (or does not fit), `rehearse()` trains the project's method
(LoRA / QLoRA), rank, alpha, targets, batch, gradient accumulation, sequence length, gradient
checkpointing and dtype, exactly as the Olive config the project generates asks for, for a few
optimizer steps on `shapes` (random weights, the real shape), and measures peak memory (RSS;
on CUDA also torch.cuda.max_memory_allocated) and seconds per step. It scales the step time to
the whole run and puts the app's formula estimate next to it, then writes `models/rehearsal.json`.

Every sample is `seq_len` tokens long (the project's source_max_len unless overridden): the
worst case, which is what the memory formula assumes too; rows shorter than that train faster.
The steps run in a child process (`python -m aitk.core.rehearse`), so torch never loads in the
caller and the peak RSS is the training process's alone; building a missing shape model is a
child process of its own, so its memory does not count either.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import catalog, estimates, olive_config, shapes
from .catalog import CatalogEntry
from .errors import AitkError
from .project import Project

REPORT = Path("models") / "rehearsal.json"
DEFAULT_STEPS = 2


def _model_for(project: Project, layers: int | None, seed: int) -> tuple[CatalogEntry, Path, shapes.ShapeSpec | None]:
    entry = catalog.load().get(project.settings.model.id)
    if entry.local:  # the tiny model is its own shape model: the project carries it
        if layers is not None:
            raise AitkError(f"{entry.id} is tiny already; --layers applies to hub models' shape models")
        return entry, Path(project.base_model_path()), None
    spec = shapes.spec_for(entry, layers, seed)
    return entry, shapes.model_dir(spec), spec


def total_steps(project: Project) -> tuple[int | None, str]:
    """Optimizer steps of the whole run, and how they were found (None: rows unknown)."""
    f = project.settings.finetune
    if f.max_steps > 0:
        return f.max_steps, "max_steps"
    from .datasets import is_file_source, load_rows

    source = project.settings.data.dataset
    if not is_file_source(source):
        return None, f"epochs over {source}, whose row count is not known offline"
    rows = len(load_rows(str(project.path(source))).rows)
    per_epoch = math.ceil(math.ceil(rows / f.per_device_train_batch_size) / f.gradient_accumulation_steps)
    return math.ceil(per_epoch * f.num_train_epochs), f"{f.num_train_epochs:g} epochs x {per_epoch} steps ({rows} rows)"


def plan(project: Project, device: str, seq_len: int | None) -> dict:
    """What the child trains: the settings of the project's own Olive pass for `device`."""
    s = project.settings
    f = s.finetune
    if device not in ("cpu", "cuda"):
        raise AitkError(f"rehearsal runs on cpu or cuda, not {device}", "pass --device cpu")
    p = olive_config.pass_config(s, device)
    # Olive's LoRA/QLoRA passes default torch_dtype to bfloat16 when the config leaves it out.
    model_dtype = p.get("torch_dtype", "bfloat16")
    args = p["training_args"]
    return {
        "method": f.method, "device": device,
        "model_dtype": model_dtype, "compute_dtype": p.get("compute_dtype") or model_dtype,
        "quant_type": p.get("quant_type", f.quant_type), "double_quant": p.get("double_quant", f.double_quant),
        "lora_r": p["r"], "lora_alpha": p["alpha"], "lora_dropout": p["lora_dropout"],
        "target_modules": p.get("target_modules"),
        "batch_size": args["per_device_train_batch_size"],
        "gradient_accumulation_steps": args["gradient_accumulation_steps"],
        "gradient_checkpointing": args["gradient_checkpointing"],
        "learning_rate": args["learning_rate"], "optim": args["optim"], "seed": f.seed,
        "seq_len": seq_len or s.data.source_max_len,
    }


def formula(entry: CatalogEntry, settings: dict, cpu_count: int, run_steps: int | None = None) -> dict:
    """The app's estimates for the rehearsed shape and settings: the one place this module
    asks the formulas (so they can move without touching the rest)."""
    est = estimates.memory_estimate(
        entry, settings["method"], settings["device"], batch_size=settings["batch_size"],
        seq_len=settings["seq_len"], lora_r=settings["lora_r"], target_modules=settings["target_modules"],
        compute_dtype=settings["model_dtype"], gradient_checkpointing=settings["gradient_checkpointing"])
    out = {"memory_bytes": est.total, "memory_parts": est.parts, "memory_assumptions": est.assumptions,
           "seconds_per_step": None, "run_hours": None, "cpu_count": cpu_count}
    if settings["device"] == "cpu":
        per_step = estimates.cpu_step_seconds(
            entry, settings["method"], cpu_count, batch_size=settings["batch_size"], seq_len=settings["seq_len"],
            gradient_accumulation_steps=settings["gradient_accumulation_steps"],
            gradient_checkpointing=settings["gradient_checkpointing"], lora_r=settings["lora_r"],
            target_modules=settings["target_modules"])
        out.update(seconds_per_step=per_step, run_hours=per_step * run_steps / 3600 if run_steps else None)
    return out


def _child(args: list[str], on_line: Callable[[str], None]) -> None:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", CI="1")
    proc = subprocess.Popen([sys.executable, "-m", "aitk.core.rehearse", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-20:]
        if line.startswith("[rehearse]"):
            on_line(line[len("[rehearse] "):])
        elif os.environ.get("AITK_DEBUG"):
            print(line, file=sys.stderr)
    if proc.wait() != 0:
        last = next((t for t in reversed(tail) if t.strip()), "no output")
        raise AitkError(f"rehearsal process failed: {last}", "rerun with AITK_DEBUG=1 in the environment "
                        "to see its whole output")


def rehearse(project: Project, *, steps: int = DEFAULT_STEPS, layers: int | None = None,
             seq_len: int | None = None, device: str | None = None, seed: int = 0,
             on_line: Callable[[str], None] = lambda line: None) -> dict:
    """Run the rehearsal, write `models/rehearsal.json` into the project, and return the report."""
    if steps < 1:
        raise AitkError(f"--steps {steps}: must be at least 1")
    device = device or project.device()
    settings = plan(project, device, seq_len)
    entry, model_path, spec = _model_for(project, layers, seed)
    if spec is not None and not shapes.is_built(spec):
        on_line(f"building the {spec.name} shape model")
        _child(["build", entry.id, str(spec.layers), str(spec.seed)], on_line)
    marker = shapes.info(model_path) if spec is not None else None
    with tempfile.TemporaryDirectory(prefix="aitk-rehearse-") as tmp:
        job = Path(tmp) / "plan.json"
        result = Path(tmp) / "result.json"
        job.write_text(json.dumps({"model_path": str(model_path), "steps": steps, "settings": settings,
                                   "result": str(result)}))
        _child(["train", str(job)], on_line)
        measured = json.loads(result.read_text())

    shape_entry = entry
    if marker is not None and marker["facts"]["num_layers"] != entry.num_layers:
        shape_entry = entry.model_copy(update={"num_layers": marker["facts"]["num_layers"],
                                               "params": marker["params"]})
    run_steps, how = total_steps(project)
    estimate = formula(shape_entry, settings, measured["cpu_count"], run_steps)
    peak = measured["cuda_max_allocated_bytes"] if device == "cuda" else measured["peak_rss_bytes"]
    per_step = measured["seconds_per_step"]
    report = {
        "project": project.name, "model": entry.id,
        "shape": {"path": str(model_path), "layers": shape_entry.num_layers, "catalog_layers": entry.num_layers,
                  "params": shape_entry.params},
        "settings": settings, "steps": steps,
        "measured": measured,
        "estimated": estimate,
        "run": {"steps": run_steps, "steps_from": how,
                "measured_hours": per_step * run_steps / 3600 if run_steps else None},
        "ratios": {"memory_measured_over_estimate": peak / estimate["memory_bytes"],
                   "step_measured_over_estimate": (per_step / estimate["seconds_per_step"]
                                                   if estimate["seconds_per_step"] else None),
                   # The formula is for an idle machine: process CPU seconds over the cores' worth
                   # of the estimate tell the formula's error apart from other programs' load.
                   "step_cpu_over_estimate": (_median(measured["step_cpu_seconds"][1:] or measured["step_cpu_seconds"])
                                              / (estimate["seconds_per_step"] * measured["threads"])
                                              if estimate["seconds_per_step"] else None)},
    }
    out = project.path(REPORT)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_out, out)
    report["report_path"] = str(out)
    return report


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


# --- the child process --------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"[rehearse] {text}", flush=True)


def _peak_rss() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _train(job: dict) -> dict:
    import time

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    s = job["settings"]
    cuda = s["device"] == "cuda"
    if cuda and not torch.cuda.is_available():
        raise AitkError("the project trains on cuda but this torch sees no CUDA GPU",
                        "install a CUDA build of torch, or pass --device cpu")
    # fp16 training is fp16 mixed precision over an fp32 model in Olive; rehearse the fp32 model.
    dtype = getattr(torch, s["model_dtype"] if s["model_dtype"] != "float16" else "float32")
    kwargs: dict = {"dtype": dtype}
    if s["method"] == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=s["quant_type"], bnb_4bit_use_double_quant=s["double_quant"],
            bnb_4bit_compute_dtype=getattr(torch, s["compute_dtype"]))
    if cuda:
        kwargs["device_map"] = {"": 0}
    torch.manual_seed(s["seed"])
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(job["model_path"], **kwargs)
    # As Olive's prepare_model_for_finetuning: freeze, then checkpointing with input grads.
    for p in model.parameters():
        p.requires_grad = False
    if s["gradient_checkpointing"]:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    lora = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                      target_modules=s["target_modules"], bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if s["optim"] == "paged_adamw_32bit":  # what Olive's QLoRA trains with on CUDA
        import bitsandbytes as bnb

        optim = bnb.optim.PagedAdamW32bit(trainable, lr=s["learning_rate"])
    else:
        optim = torch.optim.AdamW(trainable, lr=s["learning_rate"])
    load_s = time.perf_counter() - t0
    rss_loaded = _peak_rss()
    _say(f"loaded in {load_s:.1f} s; {sum(p.numel() for p in trainable):,} trainable parameters")

    # Token ids the tokenizer can produce (the shape model's tokenizer is the tiny one).
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(job["model_path"]))
    g = torch.Generator().manual_seed(s["seed"])
    device = "cuda:0" if cuda else "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    accum, b, n = s["gradient_accumulation_steps"], s["batch_size"], s["seq_len"]
    micro_s: list[float] = []
    step_s: list[float] = []
    losses: list[float] = []
    cpu_s: list[float] = []  # process CPU time per step: wall time inflated by a busy machine shows here
    for step in range(job["steps"]):
        t_step = time.perf_counter()
        c_step = time.process_time()
        for _ in range(accum):
            ids = torch.randint(0, vocab, (b, n), generator=g).to(device)
            t = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss / accum
            loss.backward()
            if cuda:
                torch.cuda.synchronize()
            micro_s.append(time.perf_counter() - t)
            losses.append(loss.item() * accum)
        optim.step()
        optim.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - t_step)
        cpu_s.append(time.process_time() - c_step)
        _say(f"step {step + 1}/{job['steps']}: {step_s[-1]:.2f} s, loss {losses[-1]:.3f}")
    # The first micro-batch pays one-time costs (allocator growth, kernel selection): a step is
    # the median of the other micro-batches times the accumulation, plus the median optimizer share.
    warm = micro_s[1:] or micro_s
    micro = sorted(warm)[len(warm) // 2]
    rest = sorted(st - sum(micro_s[i * accum:(i + 1) * accum]) for i, st in enumerate(step_s))
    optimizer_s = max(0.0, rest[len(rest) // 2])
    per_step = micro * accum + optimizer_s
    return {
        "seconds_per_step": per_step, "seconds_per_micro_batch": micro, "optimizer_seconds": optimizer_s,
        "micro_batch_seconds": micro_s,
        "step_seconds": step_s, "step_cpu_seconds": cpu_s, "tokens_per_second": b * n / micro, "load_seconds": load_s,
        "losses": losses, "peak_rss_bytes": _peak_rss(), "rss_after_load_bytes": rss_loaded,
        "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count() or 1,
    }


def main(argv: list[str]) -> int:
    try:
        if argv[0] == "build":
            entry = catalog.load().get(argv[1])
            shapes.build_shape(shapes.spec_for(entry, int(argv[2]), int(argv[3])))
            _say("shape model built")
        elif argv[0] == "train":
            job = json.loads(Path(argv[1]).read_text())
            result = _train(job)
            Path(job["result"]).write_text(json.dumps(result))
        else:
            raise AitkError(f"unknown rehearsal step {argv[0]!r}")
    except AitkError as e:
        print(f"error: {e.message}" + (f" ({e.hint})" if e.hint else ""), flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
