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

from . import export_state, publish
from .errors import AitkError
from .jobs import die_with_parent

PRECISIONS = {"cpu": ("int4", "fp32"), "cuda": ("fp16", "int4", "fp32"), "dml": ("fp16", "int4")}
# Files genai needs beside the ONNX graph, which ExtractAdapters does not carry over.
SIDE_FILES = ("genai_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
              "special_tokens_map.json", "tokenizer.model", "added_tokens.json")
ADAPTER_NAME = "tuned"
BASE_ADAPTER = "base"  # zeros; see write_zero_adapter
MANIFEST = "aitk-export.json"


def check_precision(precision: str, device: str) -> None:
    allowed = PRECISIONS.get(device, PRECISIONS["cpu"])
    if precision not in allowed:
        raise AitkError(f"precision {precision} is not available for {device}",
                        f"choose one of: {', '.join(allowed)}")


def _run_builder(model: str, adapter: Path | None, out: Path, precision: str, device: str, cache: Path) -> None:
    ep = {"cuda": "cuda", "dml": "dml"}.get(device, "cpu")
    extra = ["hf_token=false"]
    if adapter is not None:
        extra.append(f"adapter_path={adapter}")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i" if Path(model).is_dir() else "-m",
           model, "-o", str(out), "-p", precision, "-e", ep, "-c", str(cache), "--extra_options", *extra]
    print(f"$ {' '.join(cmd)}", flush=True)
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


def export_model(model: str, adapter: Path | None, dest: Path, *, precision: str = "fp32",
                 device: str = "cpu") -> Path:
    """Write `dest/` = genai model folder (+ `adapters/tuned.onnx_adapter` when an adapter is given).

    Built in a work folder beside `dest` and published in one atomic swap (core/publish.py): a
    failed export leaves the previous one intact, and a killed one leaves a work folder that the
    next export removes. The adapter is read from a consistent copy, and its version is stamped
    on the export (so a stale export can be told from a current one).
    """
    check_precision(precision, device)
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise AitkError(f"no LoRA adapter at {adapter}", "run `aitk finetune` first, or export with --base-only")
    for gone in publish.clean_leftovers(dest):
        print(f"[aitk] removed {gone.name}, left by an export that did not finish", flush=True)
    work = publish.work_dir(dest, "build")
    try:
        t0 = time.time()
        adapter_version = None
        source_adapter = adapter
        # What the export is built from, read before the build: a fine-tune publishing meanwhile
        # makes this export stale rather than wrongly current.
        built_from = export_state.read_adapter(adapter)
        if adapter is not None:
            adapter = publish.snapshot(adapter, work / "adapter")
            adapter_version = (publish.stamp_of(adapter) or {}).get("version")
        raw = work / "raw"
        _run_builder(model, adapter, raw, precision, device, work / "hf-cache")
        final = work / "final"
        if adapter is not None:
            weights = _extract_adapters(raw, final, work / "olive-cache")
            if weights is None:
                raise AitkError("the exported model has no LoRA weights to extract",
                                "check that the adapter's target modules exist in this model")
            (final / "adapters").mkdir()
            os.replace(weights, final / "adapters" / f"{ADAPTER_NAME}.onnx_adapter")
            write_zero_adapter(final / "adapters" / f"{ADAPTER_NAME}.onnx_adapter",
                               final / "adapters" / f"{BASE_ADAPTER}.onnx_adapter")
            for junk in ("footprint.json", "output_footprint.json", "run_history.txt", "model_config.json"):
                (final / junk).unlink(missing_ok=True)
            for name in SIDE_FILES:
                if (raw / name).exists():
                    shutil.copy2(raw / name, final / name)
        else:
            final = raw
        (final / MANIFEST).write_text(json.dumps({
            "base_model": model, "adapter": str(source_adapter) if source_adapter else None,
            "adapter_version": adapter_version, "precision": precision,
            "device": device, "seconds": round(time.time() - t0, 2),
        }, indent=2))
        publish.publish(final, dest, adapter_version=adapter_version, adapter=built_from)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
