"""The base model's own files (a hub id outside the catalog), the missing-base-model preflight,
and the model.id / model.path consistency check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aitk.core import catalog as cat
from aitk.core.defaults import default_settings

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def aitk(*args, cwd=None, env=None):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


def cached_model(repo: str, config: dict, tokenizer: dict | None = None, weights: bool = True) -> Path:
    """A model in the (session's) HF cache layout, as `hf download` leaves it."""
    from aitk.core.hub import repo_folder

    folder = repo_folder(repo)
    snap = folder / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        (snap / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    if weights:
        (snap / "model.safetensors").write_bytes(b"\0" * 16)
    return snap


TEMPLATE_MODELS = {  # id: (chat format family, gated)
    "phi-1.5": ("plain", False), "phi-2": ("plain", False), "phi-3-mini-4k": ("phi3", False),
    "llama-2-7b": ("plain", True), "llama-3-8b": ("plain", True), "mistral-7b-v0.1": ("plain", True),
    "mistral-7b-instruct-v0.2": ("mistral", True), "zephyr-7b-beta": ("zephyr", False),
}


@pytest.mark.parametrize("model_id", TEMPLATE_MODELS)
def test_template_models_have_their_facts_and_defaults(model_id):
    e = cat.load(include_user=False).get(model_id)
    family, gated = TEMPLATE_MODELS[model_id]
    assert (e.chat_template, e.gated) == (family, gated)
    assert e.license and e.context_length >= 2048 and e.lora_targets and e.variants
    s = default_settings("p", model_id, "cuda")
    assert s.model.path == e.repo and s.finetune.target_modules == e.lora_targets
    assert s.data.source_max_len == min(1024, e.context_length)
    marker = {"plain": "### Question:", "phi3": "<|user|>", "mistral": "[INST]", "zephyr": "</s>\n<|assistant|>"}
    assert marker[family] in s.data.text_template


def test_a_hub_model_outside_the_catalog_uses_its_own_files(tmp_path):
    cached_model("acme/small-llama", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
                 {"chat_template": CHATML, "bos_token": "<s>", "eos_token": {"content": "</s>"}})
    code, out, err = aitk("project", "new", str(tmp_path / "p"), "--model", "acme/small-llama")
    assert code == 0, err
    s = tomllib.loads((tmp_path / "p" / "aitk.toml").read_text())
    assert s["finetune"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"]
    assert s["data"]["text_template"] == ("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
                                          "{answer}<|im_end|>\n")
    assert s["inference"]["prompt_template"] == "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    assert "<|user|>" not in s["data"]["text_template"]


def _hub_project(tmp_path, name: str, model_id: str, path: str) -> Path:
    code, _, err = aitk("project", "new", str(tmp_path / name), "--model", model_id, "--set", f"model.path={path}",
                        "--dataset", str(Path(__file__).resolve().parents[1] / "core/data/tiny_qa/train.jsonl"))
    assert code == 0, err
    return tmp_path / name


def test_missing_base_model_offline_fails_before_queueing(tmp_path):
    root = _hub_project(tmp_path, "off", "phi-2", "microsoft/phi-2")
    code, out, err = aitk("finetune", "--detach", "-P", str(root))
    assert code == 2 and "job " not in out
    assert "base model phi-2 (microsoft/phi-2) is not on this machine and Hugging Face is in offline mode" in err
    assert "`aitk model pull phi-2`" in err
    code, out, _ = aitk("jobs", "list")
    assert str(root) not in out


def test_missing_gated_model_without_token(tmp_path):
    root = _hub_project(tmp_path, "gated", "llama-3-8b", "meta-llama/Meta-Llama-3-8B")
    env = {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "HF_TOKEN_PATH": str(tmp_path / "no-token")}
    code, _, err = aitk("finetune", "--detach", "-P", str(root), env=env)
    assert code == 2 and "gated and not on this machine, and no Hugging Face token is set" in err
    assert "set HF_TOKEN" in err and "`aitk model pull llama-3-8b`" in err


def test_a_typo_in_the_hub_id_names_the_nearest_model(tmp_path):
    root = _hub_project(tmp_path, "typo", "microsoft/Phi-3-mini-4k-instrct", "microsoft/Phi-3-mini-4k-instrct")
    code, _, err = aitk("finetune", "--detach", "-P", str(root))
    assert code == 2 and "did you mean microsoft/Phi-3-mini-4k-instruct (phi-3-mini-4k)?" in err


def test_a_cached_model_passes_the_preflight_and_an_empty_one_does_not(tmp_path):
    from aitk.core.model_files import require_local
    from aitk.core.settings import ModelSettings
    from aitk.core.errors import AitkError

    cached_model("microsoft/phi-2", {"model_type": "phi", "architectures": ["PhiForCausalLM"]})
    require_local(ModelSettings(id="phi-2", path="microsoft/phi-2"), tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(AitkError, match="has no weights"):
        require_local(ModelSettings(id="phi-2", path="m"), tmp_path)
    with pytest.raises(AitkError, match="is not there"):
        require_local(ModelSettings(id="phi-2", path="model-cache/microsoft/phi-2"), tmp_path)


def test_model_id_and_path_that_disagree_are_refused_on_save(tmp_path):
    root = _hub_project(tmp_path, "p", "phi-3-mini-4k", "microsoft/Phi-3-mini-4k-instruct")
    before = (root / "aitk.toml").read_bytes()
    code, _, err = aitk("project", "set", "-P", str(root), "model.path=meta-llama/Llama-2-7b-hf")
    assert code == 2 and "model.id 'phi-3-mini-4k' is microsoft/Phi-3-mini-4k-instruct but model.path is " \
                         "'meta-llama/Llama-2-7b-hf'" in err
    assert (root / "aitk.toml").read_bytes() == before
    code, _, err = aitk("project", "set", "-P", str(root), "model.id=llama-2-7b", "model.path=meta-llama/Llama-2-7b-hf")
    assert code == 0, err
    # A folder whose config names another architecture than the id's.
    folder = root / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["PhiForCausalLM"]}))
    code, _, err = aitk("project", "set", "-P", str(root), "model.path=m")
    assert code == 2 and "holds a PhiForCausalLM but model.id 'llama-2-7b' is a LlamaForCausalLM" in err
    code, _, err = aitk("project", "new", str(tmp_path / "t"))
    assert code == 0, err
    code, _, err = aitk("project", "set", "-P", str(tmp_path / "t"), "model.path=microsoft/phi-2")
    assert code == 2 and "is built on this machine but model.path 'microsoft/phi-2' is a Hugging Face repo" in err
