"""Project settings -> an Olive workflow config.

The config is written into the project (`finetuning/olive-config.json`) with paths relative to
the project root, so `olive run --config finetuning/olive-config.json` works there without aitk.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from . import training_text
from .datasets import is_file_source
from .errors import AitkError
from .settings import ProjectSettings

ADAPTER_OUTPUT = "models/olive"  # Olive writes `adapter/` (and a copy of the base) under this


def _load_dataset_config(source: str, split: str) -> dict:
    if is_file_source(source):
        kind = Path(source).suffix.lower().lstrip(".")
        # Local files load through HF `datasets` builders, where a file is always split "train".
        return {"data_name": {"jsonl": "json"}.get(kind, kind), "data_files": source, "split": "train"}
    name, _, subset = source.partition(":")
    config = {"data_name": name, "split": split}
    if subset:
        config["subset"] = subset
    return config


def _data_config(name: str, source: str, split: str, s: ProjectSettings,
                 tokens: training_text.SpecialTokens) -> dict:
    d = s.data
    return {
        "name": name,
        "type": "HuggingfaceContainer",
        "load_dataset_config": _load_dataset_config(source, split),
        "pre_process_data_config": {
            "strategy": d.corpus_strategy,
            "max_seq_len": d.source_max_len,
            "pad_to_max_len": d.pad_to_max_len,
            # Olive renders a row as text_template.format(**row): settings validation keeps the
            # template to the grammar of core/text_template.py, where that is exactly what the
            # preview and the dataset check render. Olive's own bos/eos wrapping is off (a literal
            # "None" without a BOS token, a doubled end token): the model's special tokens go into
            # the template instead, where its chat format has them (core/training_text.py).
            "text_template": training_text.olive_template(d.text_template, tokens),
            "add_special_tokens": False,
        },
    }


def accelerator(device: str) -> dict:
    providers = {"cuda": "CUDAExecutionProvider", "dml": "DmlExecutionProvider"}
    return {"device": "gpu" if device in providers else "cpu",
            "execution_providers": [providers.get(device, "CPUExecutionProvider")]}


@functools.cache
def _cuda_bf16() -> bool | None:
    """Whether this machine's first NVIDIA GPU runs bfloat16 (compute capability 8.0+); None when
    unknown (no GPU here: a config for a remote GPU)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.split()
        return float(out[0]) >= 8.0
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def train_dtype(requested: str, device: str) -> str:
    """The dtype the model trains in (Olive's `torch_dtype`, for every method): what the hardware
    runs fast. CPUs train in float32 (bfloat16 on an AVX2 CPU is ~19x slower per step at
    Qwen2.5-0.5B's shape); a CUDA GPU takes the setting, except bfloat16 on one without it
    (before Ampere), which gets float16."""
    if device != "cuda":
        return "float32"
    if requested == "bfloat16" and _cuda_bf16() is False:
        return "float16"
    return requested


def pass_config(s: ProjectSettings, device: str) -> dict:
    """The one fine-tuning pass. Refuses combinations that cannot run, naming what would."""
    f = s.finetune
    if f.loftq and device != "cuda":
        raise AitkError("LoftQ needs a CUDA GPU and none is selected",
                        "use method `qlora` without loftq, or `lora`, on this device")
    if device == "dml" and f.method == "qlora":
        raise AitkError("QLoRA needs bitsandbytes, which has no DirectML backend",
                        "use method `lora` on DirectML, or train on CUDA/CPU")
    if device != "cuda" and f.compute_dtype == "float16":
        raise AitkError("float16 training needs a CUDA GPU", "use compute_dtype float32 (or bfloat16) on CPU")
    training_args = {
        "seed": f.seed,
        "data_seed": f.data_seed,
        "per_device_train_batch_size": f.per_device_train_batch_size,
        "per_device_eval_batch_size": f.per_device_eval_batch_size,
        "gradient_accumulation_steps": f.gradient_accumulation_steps,
        "gradient_checkpointing": f.gradient_checkpointing,
        "learning_rate": f.learning_rate,
        "lr_scheduler_type": f.lr_scheduler_type,
        "num_train_epochs": f.num_train_epochs,
        "max_steps": f.max_steps,
        "logging_steps": f.logging_steps,
        "eval_steps": f.eval_steps,
        "save_steps": f.save_steps,
        "output_dir": f.checkpoint_dir,
        "save_total_limit": 2,  # resume needs the last one; a 7B model's checkpoints are GBs each
        "report_to": "none",
        # The paged optimizer QLoRA defaults to exists only on CUDA.
        "optim": "paged_adamw_32bit" if device == "cuda" and f.method == "qlora" else "adamw_torch",
        # Arguments the settings do not model (an imported AI Toolkit project's max_grad_norm...);
        # settings validation keeps them clear of the keys above.
        **f.extra_training_args,
    }
    p = {
        "type": "LoftQ" if f.loftq else {"lora": "LoRA", "qlora": "QLoRA"}[f.method],
        "train_data_config": "train_data",
        "r": f.lora_r,
        "alpha": f.lora_alpha,
        "lora_dropout": f.lora_dropout,
        "training_args": training_args,
    }
    if f.target_modules:
        p["target_modules"] = list(f.target_modules)
    if s.data.eval_dataset:
        p["eval_data_config"] = "eval_data"
    if f.method == "qlora":
        p["compute_dtype"] = f.compute_dtype
        if not f.loftq:
            p["quant_type"] = f.quant_type
            p["double_quant"] = f.double_quant
        # 4-bit weights cannot be saved back for export; keep the adapter in full precision.
        p["save_quant_config"] = False
    # Olive's default is bfloat16 for every method (embeddings, norms, the tied lm_head and the
    # adapter of a QLoRA run too): set it always, by the hardware.
    p["torch_dtype"] = train_dtype(f.compute_dtype, device)
    return p


def build(s: ProjectSettings, device: str, root: Path | None = None) -> dict:
    """The workflow config; `root` (the project folder) finds a model path given relative to it,
    whose tokenizer decides the special tokens of the training text."""
    model = Path(root) / s.model.path if root is not None and (Path(root) / s.model.path).is_dir() else s.model.path
    tokens = training_text.special_tokens(model)
    data_configs = [_data_config("train_data", s.data.dataset, s.data.train_split, s, tokens)]
    if s.data.eval_dataset:
        data_configs.append(_data_config("eval_data", s.data.eval_dataset, s.data.eval_split, s, tokens))
    return {
        "input_model": {"type": "HfModel", "model_path": s.model.path},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [accelerator(device)]}},
        "data_configs": data_configs,
        "passes": {"finetune": pass_config(s, device)},
        "host": "local_system",
        "target": "local_system",
        "output_dir": ADAPTER_OUTPUT,
        "cache_dir": "models/.olive-cache",
        # Olive's cache is keyed on the config, not the data: a rerun after editing the dataset
        # would silently return the old adapter.
        "clean_cache": True,
        "log_severity_level": 1,
    }
