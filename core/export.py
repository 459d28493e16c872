"""Export a base model + LoRA adapter to ONNX for onnxruntime-genai.

onnxruntime-genai 0.18's own model builder writes the graph with the LoRA branches kept apart;
Olive's ExtractAdapters pass then turns those weights into graph inputs and saves them as one
`.onnx_adapter` file. The result: one base model folder that chats with or without the adapter,
switched per request (Olive's ModelBuilder pass only works with genai 0.14, hence this route).
Runs in a job process: it imports Olive and calls the builder as its documented CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import export_state, publish, threads
from .adapters import BASE as BASE_ADAPTER, TUNED as ADAPTER_NAME  # BASE: zeros, see write_zero_adapter
from .errors import AitkError
from .jobs import die_with_parent

PRECISIONS = {"cpu": ("int4", "fp32"), "cuda": ("fp16", "int4", "fp32"), "dml": ("fp16", "int4")}
# Files genai needs beside the ONNX graph, which ExtractAdapters does not carry over.
SIDE_FILES = ("genai_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
              "special_tokens_map.json", "tokenizer.model", "added_tokens.json")
MANIFEST = "aitk-export.json"
MERGED_SUFFIX = "-merged"  # models/onnx/<precision>-merged: the adapter folded into the weights
# int4 weight quantization (MatMulNBits): block size and accuracy level, chosen by
# `bench/int4_choice.py` (speed at Qwen2.5-0.5B's shape, logit error and the trained tiny model's
# eval loss against fp32); see docs/int4.md for the numbers and why.
INT4_BLOCK_SIZE = 32
INT4_ACCURACY_LEVEL = 4
# Module names the builder gives LoRA-wrapped projections (it splits packed qkv and gate_up).
_LORA_MODULES = ("attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/o_proj", "attn/qkv_proj", "attn/dense",
                 "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj", "mlp/gate_up_proj", "mlp/fc1", "mlp/fc2")


def check_precision(precision: str, device: str) -> None:
    allowed = PRECISIONS.get(device, PRECISIONS["cpu"])
    if precision not in allowed:
        raise AitkError(f"precision {precision} is not available for {device}",
                        f"choose one of: {', '.join(allowed)}")


def _num_layers(model: str) -> int | None:
    from .training_text import model_folder

    folder = model_folder(model)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8")) if folder else {}
    except (OSError, ValueError):
        return None
    value = config.get("num_hidden_layers") or (config.get("text_config") or {}).get("num_hidden_layers")
    return value if isinstance(value, int) and value > 0 else None


def lora_nodes(layers: int) -> list[str]:
    """The builder's names for every LoRA MatMul of a model with `layers` layers (names of
    modules the adapter does not wrap match nothing and are ignored)."""
    return [f"/model/layers.{i}/{m}/lora_{ab}/MatMul" for i in range(layers) for m in _LORA_MODULES
            for ab in "AB"]


def _run_builder(model: str, adapter: Path | None, out: Path, precision: str, device: str, cache: Path,
                 lora_precision: str = "fp32", int4: tuple[int, int] | None = None) -> None:
    ep = {"cuda": "cuda", "dml": "dml"}.get(device, "cpu")
    extra = ["hf_token=false"]
    if precision == "int4":
        block, level = int4 or (INT4_BLOCK_SIZE, INT4_ACCURACY_LEVEL)
        extra += [f"block_size={block}", f"accuracy_level={level}"]
    if adapter is not None:
        extra.append(f"adapter_path={adapter}")
        layers = _num_layers(model)
        if precision == "int4" and lora_precision == "fp32" and layers:
            # The LoRA weights stay fp32: ExtractAdapters makes them graph inputs, which ORT cannot
            # prepack, so int4 ones cost 1.65x decode at Qwen2.5-0.5B's shape (336 rank-16 int4
            # MatMuls: 36 ms of a 72 ms token; fp32: 27.3 vs 16.7 tok/s, no measurable accuracy
            # change); rank-r matrices are ~1% of the weights, so fp32 costs no real memory.
            extra.append("nodes_to_exclude=" + ",".join(lora_nodes(layers)))
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i" if Path(model).is_dir() else "-m",
           model, "-o", str(out), "-p", precision, "-e", ep, "-c", str(cache), "--extra_options", *extra]
    shown = [f"nodes_to_exclude=<{a.count(',') + 1} LoRA MatMuls>" if a.startswith("nodes_to_exclude=") else a
             for a in cmd]
    print(f"$ {' '.join(shown)}", flush=True)
    proc = subprocess.run(cmd, stdout=sys.stdout, stderr=subprocess.STDOUT, env={**os.environ, "CI": "1"},
                          preexec_fn=die_with_parent())
    if proc.returncode != 0:
        raise AitkError(f"the ONNX model builder failed (exit {proc.returncode})", "see the job log above")


def _extract_adapters(model_dir: Path, out: Path, cache: Path) -> Path | None:
    from olive.workflows import run

    run({
        "input_model": {"type": "ONNXModel", "model_path": str(model_dir), "onnx_file_name": "model.onnx"},
        "passes": {"extract": {"type": "ExtractAdapters", "make_inputs": True, "dynamic_lora_r": True,
                               "optional_inputs": True, "save_format": "onnx_adapter"}},
        "output_dir": str(out),
        "cache_dir": str(cache),
        "clean_cache": True,
        "log_severity_level": 2,
    })
    found = sorted(out.glob("*.onnx_adapter"))
    return found[0] if found else None


def write_zero_adapter(adapter_file: Path, dest: Path) -> None:
    """An adapter of the same shapes, all zeros: the base model's output, bit for bit.

    Serving the base model by leaving the adapter inputs empty (rank 0) makes onnxruntime reuse a
    buffer planned for rank r and fail with "Shape mismatch attempting to re-use buffer" once a
    tuned request ran first (seen on the tiny model with r equal to the hidden size). With a
    zero adapter every request has the same shapes.
    """
    import numpy as np
    import onnxruntime as ort

    src = ort.AdapterFormat.read_adapter(str(adapter_file))
    zeros = {}
    for name, value in src.get_parameters().items():
        array = value.numpy()
        zeros[name] = ort.OrtValue.ortvalue_from_numpy(np.zeros_like(array))
    out = ort.AdapterFormat()
    out.set_adapter_version(src.get_adapter_version())
    out.set_model_version(src.get_model_version())
    out.set_parameters(zeros)
    out.export_adapter(str(dest))


def write_session_threads(model_dir: Path, count: int | None = None) -> int:
    """Set the decoder's intra-op threads in `model_dir`'s genai_config.json to this machine's
    physical cores (core/threads.py), for every reader of the export, aitk or not."""
    path = model_dir / "genai_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    count = count or threads.physical_cores()
    path.write_text(json.dumps(threads.set_session_threads(config, count), indent=4), encoding="utf-8")
    return count


def merge_adapter(model: str, adapter: Path, out: Path) -> Path:
    """The base model with the LoRA adapter folded into its weights (peft `merge_and_unload`), saved
    in fp32 as an ordinary Hugging Face folder with the base's tokenizer files beside it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    if Path(model).is_dir():  # genai reads the generation config (eos ids) and chat template files too
        for name in ("generation_config.json", "chat_template.jinja"):
            if (Path(model) / name).is_file():
                shutil.copy2(Path(model) / name, out / name)
    return out


def _parameter_names(adapter_file: Path) -> set[str]:
    import onnxruntime as ort

    return set(ort.AdapterFormat.read_adapter(str(adapter_file)).get_parameters())


def _extract_other(model: str, name: str, adapter: Path, work: Path, precision: str, device: str,
                   lora_precision: str, want: set[str]) -> Path | None:
    """The `.onnx_adapter` of one more adapter for the graph built from the first: its own build
    (the builder folds each adapter's alpha/r into its B weights), of which only the extracted
    weights are kept. None, said in the log, when its LoRA weights are not the graph's inputs (an
    adapter that wraps other modules needs a graph of its own: export it as the active one)."""
    here = work / f"other-{name}"
    snap = publish.snapshot(adapter, here / "adapter")
    if snap is None:
        print(f"[aitk] adapter {name} left out: it was removed during the export", flush=True)
        return None
    _run_builder(model, snap, here / "raw", precision, device, here / "hf-cache", lora_precision)
    weights = _extract_adapters(here / "raw", here / "final", here / "olive-cache")
    if weights is None or _parameter_names(weights) != want:
        print(f"[aitk] adapter {name} left out: it wraps other modules than the active adapter "
              f"(`aitk adapters use {name}`, then export, to chat with it)", flush=True)
        return None
    return weights


def export_model(model: str, adapter: Path | None, dest: Path, *, precision: str = "fp32",
                 device: str = "cpu", merged: bool = False, lora_precision: str = "fp32",
                 name: str = ADAPTER_NAME, others: dict[str, Path] | None = None,
                 int4: tuple[int, int] | None = None) -> Path:
    """Write `dest/` = genai model folder (+ `adapters/<name>.onnx_adapter` when an adapter is given,
    and one `.onnx_adapter` for each of `others`, by name, switched per request on the one graph).

    With `merged`, the adapter is folded into the weights before the build (and quantization):
    one plain model that decodes at the base model's speed, for serving and plain tuned chat;
    the adapter form stays the one for side-by-side and switching. `lora_precision` is the LoRA
    weights' precision in an int4 adapter export: fp32 (measured faster, see _run_builder);
    int4 only to measure that (bench/merged_decode.py). `int4` = (block size, accuracy level)
    overrides the chosen ones, to measure others (bench/int4_choice.py).

    Built in a work folder beside `dest` and published in one atomic swap (core/publish.py): a
    failed export leaves the previous one intact, and a killed one leaves a work folder that the
    next export removes. The adapter is read from a consistent copy, and what it was is stamped
    on the export (so a stale export can be told from a current one).
    """
    check_precision(precision, device)
    if merged and adapter is None:
        raise AitkError("a merged export needs an adapter", "run `aitk finetune` first, or export without --merged")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise AitkError(f"no LoRA adapter at {adapter}", "run `aitk finetune` first, or export with --base-only")
    for gone in publish.clean_leftovers(dest):
        print(f"[aitk] removed {gone.name}, left by an export that did not finish", flush=True)
    work = publish.work_dir(dest, "build")
    try:
        t0 = time.time()
        source_adapter = adapter
        # What the export is built from, read before the build: a fine-tune publishing meanwhile
        # makes this export stale rather than wrongly current.
        built_from = export_state.read_adapter(adapter)
        others = {} if merged or adapter is None else dict(others or {})
        others_from = {n: export_state.read_adapter(p) for n, p in others.items()}
        if adapter is not None:
            adapter = publish.snapshot(adapter, work / "adapter")
        raw = work / "raw"
        if merged:
            print("[aitk] folding the adapter into the base weights", flush=True)
            folded = merge_adapter(model, adapter, work / "merged-hf")
            _run_builder(str(folded), None, raw, precision, device, work / "hf-cache", int4=int4)
            shutil.rmtree(folded, ignore_errors=True)
        else:
            _run_builder(model, adapter, raw, precision, device, work / "hf-cache", lora_precision, int4)
        final = work / "final"
        if adapter is not None and not merged:
            weights = _extract_adapters(raw, final, work / "olive-cache")
            if weights is None:
                raise AitkError("the exported model has no LoRA weights to extract",
                                "check that the adapter's target modules exist in this model")
            (final / "adapters").mkdir()
            os.replace(weights, final / "adapters" / f"{name}.onnx_adapter")
            write_zero_adapter(final / "adapters" / f"{name}.onnx_adapter",
                               final / "adapters" / f"{BASE_ADAPTER}.onnx_adapter")
            want = _parameter_names(final / "adapters" / f"{name}.onnx_adapter")
            for other, path in others.items():
                print(f"[aitk] adapter {other}", flush=True)
                extra = _extract_other(model, other, path, work, precision, device, lora_precision, want)
                if extra is None:
                    others_from.pop(other)
                else:
                    os.replace(extra, final / "adapters" / f"{other}.onnx_adapter")
                shutil.rmtree(work / f"other-{other}", ignore_errors=True)
            for junk in ("footprint.json", "output_footprint.json", "run_history.txt", "model_config.json"):
                (final / junk).unlink(missing_ok=True)
            for side in SIDE_FILES:
                if (raw / side).exists():
                    shutil.copy2(raw / side, final / side)
        else:
            final = raw
        count = write_session_threads(final)
        print(f"[aitk] decoder session: {count} intra-op threads (this machine's physical cores)", flush=True)
        (final / MANIFEST).write_text(json.dumps({
            "base_model": model, "adapter": str(source_adapter) if source_adapter else None,
            "active": name if source_adapter else None, "adapters": [name, *others_from] if source_adapter else [],
            "precision": precision, "merged": merged,
            "device": device, "seconds": round(time.time() - t0, 2),
        }, indent=2))
        publish.publish(final, dest, adapter=built_from, merged=merged,
                        adapters={name: built_from, **others_from} if built_from else {})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
