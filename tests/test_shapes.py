"""Shape models (real catalog shapes, random weights) and the rehearsal that trains on them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

AITK = [sys.executable, "-m", "aitk.cli.main"]
SHAPE = "qwen2.5-0.5b"  # the smallest real shape; cut to 2 layers its embedding (136M) dominates


def aitk(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*AITK, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def shape_model() -> Path:
    """qwen2.5-0.5b at 2 layers, built by the CLI into the data dir (where rehearse finds it)."""
    out = json.loads(aitk("model", "build-shape", SHAPE, "--layers", "2", "--json").stdout)
    return Path(out["path"])


def test_every_catalog_shape_has_the_catalog_parameter_count():
    """The catalog's facts give exactly the published parameter count, per architecture."""
    from aitk.core import catalog, shapes

    entries = [e for e in catalog.load() if not e.local]
    assert {e.architecture for e in entries} >= {"Phi3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM",
                                                 "MistralForCausalLM"}
    for e in entries:
        assert shapes.param_count(shapes.spec_for(e)) == e.params, e.id


def test_shape_model_has_the_catalog_shape_and_small_token_ids(shape_model):
    from safetensors import safe_open

    from aitk.core import catalog

    e = catalog.get(SHAPE)
    config = json.loads((shape_model / "config.json").read_text())
    assert config["architectures"] == [e.architecture] and config["model_type"] == "qwen2"
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"],
            config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"],
            config["tie_word_embeddings"]) == (e.hidden_size, e.num_heads, e.num_kv_heads, e.intermediate_size,
                                               e.vocab_size, e.context_length, e.tie_embeddings)
    assert config["num_hidden_layers"] == 2
    with safe_open(shape_model / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("model.embed_tokens.weight").get_shape() == [e.vocab_size, e.hidden_size]
        assert str(f.get_slice("model.layers.1.mlp.down_proj.weight").get_dtype()) == "BF16"
    assert "lm_head.weight" not in keys  # tied, as in the real checkpoint
    assert not any(k.startswith("model.layers.2.") for k in keys)

    marker = json.loads((shape_model / "aitk-shape.json").read_text())
    tokenizer = json.loads((shape_model / "tokenizer.json").read_text())
    ids = marker["token_ids"]
    assert marker["tokenizer_vocab"] == len(tokenizer["model"]["vocab"]) < e.vocab_size
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == \
        (ids["bos"], ids["eos"], ids["pad"])
    assert max(tokenizer["model"]["vocab"].values()) < marker["tokenizer_vocab"]


def test_shape_model_is_deterministic(shape_model, tmp_path):
    again = tmp_path / "again"
    aitk("model", "build-shape", SHAPE, "--layers", "2", "--dest", str(again))
    assert digests(again) == digests(shape_model)
    # A second build of the same spec is a no-op (the marker matches).
    before = (shape_model / "model.safetensors").stat().st_mtime_ns
    aitk("model", "build-shape", SHAPE, "--layers", "2")
    assert (shape_model / "model.safetensors").stat().st_mtime_ns == before


def test_build_shape_refuses_what_it_cannot_build():
    tiny = aitk("model", "build-shape", "tiny", check=False)
    assert tiny.returncode == 2 and "build-tiny" in tiny.stderr
    deep = aitk("model", "build-shape", SHAPE, "--layers", "99", check=False)
    assert deep.returncode == 2 and "24 layers" in deep.stderr and "hint:" in deep.stderr
    unknown = aitk("model", "build-shape", "qwen9", check=False)
    assert unknown.returncode == 2 and "no model" in unknown.stderr


def test_rehearsal_writes_measured_and_estimated_fields(shape_model, tmp_path):
    project = tmp_path / "rq"
    aitk("project", "new", str(project), "--model", SHAPE, "--set", "finetune.lora_r=16",
         "--set", "finetune.gradient_accumulation_steps=1", "--set", "target.device=cpu")
    out = aitk("rehearse", "-P", str(project), "--layers", "2", "--seq-len", "16", "--steps", "2")
    assert "measured/formula" in out.stdout and "seconds per step" in out.stdout

    report = json.loads((project / "models" / "rehearsal.json").read_text())
    s, m, e = report["settings"], report["measured"], report["estimated"]
    # The project's own settings, as its Olive config trains them.
    assert (s["method"], s["lora_r"], s["batch_size"], s["gradient_accumulation_steps"], s["seq_len"],
            s["gradient_checkpointing"], s["model_dtype"]) == ("lora", 16, 1, 1, 16, True, "float32")
    assert report["shape"]["layers"] == 2 and report["shape"]["catalog_layers"] == 24
    assert len(m["step_seconds"]) == 2 and m["seconds_per_step"] > 0 and m["peak_rss_bytes"] > 0
    assert m["cuda_max_allocated_bytes"] is None
    # The estimate is for the 2-layer shape that ran, not the full model.
    assert e["memory_assumptions"]["lora_r"] == 16 and e["memory_assumptions"]["seq_len"] == 16
    assert 0 < e["memory_bytes"] < 4 * 1024**3 and e["seconds_per_step"] > 0
    assert report["run"]["steps"] == 1200 and report["run"]["measured_hours"] > 0
    assert report["ratios"]["memory_measured_over_estimate"] > 0
    # The time formula takes these settings (seq 16, no accumulation): the ratios are for this run.
    assert report["ratios"]["step_measured_over_estimate"] > 0 and report["ratios"]["step_cpu_over_estimate"] > 0
    assert e["run_hours"] == pytest.approx(e["seconds_per_step"] * 1200 / 3600)
    assert len(m["step_cpu_seconds"]) == 2
