"""`aitk project import`: every AI Toolkit template, materialised as "Generate Project" fills it,
arrives with every form value; AI Toolkit's files stay byte for byte; twice is idempotent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aitk_templates import NAMES, materialise, needs_templates

pytestmark = needs_templates

# A form filled with values unlike every default, so each one is seen to travel.
FORM = {
    "<prompt_template>": "Q: {}\\nA:", "<data_configs_split>": "train", "<text_cols>": ["phrase", "tone"],
    "<text_template>": "Q: {phrase}\\nA: {tone}", "<line_by_line>": "line-by-line", "<source_max_len>": 512,
    "<pad_to_max_len>": True, "<compute_dtype>": "bfloat16", "<quant_type>": "fp4", "<double_quant>": False,
    "<lora_r>": 24, "<lora_alpha>": 48, "<lora_dropout>": 0.05, "<eval_dataset_size>": 0.25,
    "<training_args_seed>": 7, "<training_args_data_seed>": 11, "<per_device_train_batch_size>": 2,
    "<per_device_eval_batch_size>": 3, "<gradient_accumulation_steps>": 5, "<gradient_checkpointing>": False,
    "<learning_rate>": 0.00015, "<num_train_epochs>": 2, "<max_steps>": 77, "<output_dir>": "models/ckpts",
}
EXPECTED = {
    ("inference", "prompt_template"): "Q: {}\nA:", ("data", "text_columns"): ["phrase", "tone"],
    ("data", "text_template"): "Q: {phrase}\nA: {tone}", ("data", "corpus_strategy"): "line-by-line",
    ("data", "source_max_len"): 512, ("data", "pad_to_max_len"): True, ("data", "dataset_type"): "corpus",
    ("finetune", "method"): "qlora", ("finetune", "compute_dtype"): "bfloat16", ("finetune", "quant_type"): "fp4",
    ("finetune", "double_quant"): False, ("finetune", "lora_r"): 24, ("finetune", "lora_alpha"): 48.0,
    ("finetune", "lora_dropout"): 0.05, ("finetune", "seed"): 7, ("finetune", "data_seed"): 11,
    ("finetune", "per_device_train_batch_size"): 2, ("finetune", "per_device_eval_batch_size"): 3,
    ("finetune", "gradient_accumulation_steps"): 5, ("finetune", "gradient_checkpointing"): False,
    ("finetune", "learning_rate"): 0.00015, ("finetune", "num_train_epochs"): 2.0, ("finetune", "max_steps"): 77,
    ("finetune", "checkpoint_dir"): "models/ckpts",
}
MODELS = {  # template -> (catalog id, path when no model-cache folder is there)
    "Phi-3-mini-4k-instruct": ("phi-3-mini-4k", "microsoft/Phi-3-mini-4k-instruct"),
    "llama-v2-7b": ("llama-2-7b", "meta-llama/Llama-2-7b-hf"),
    "llama-v3-8b": ("llama-3-8b", "meta-llama/Meta-Llama-3-8B"),
    "mistral-7b": ("mistral-7b-v0.1", "mistralai/Mistral-7B-v0.1"),
    "mistral-7b-v02": ("mistral-7b-instruct-v0.2", "mistralai/Mistral-7B-Instruct-v0.2"),
    "phi-1_5": ("phi-1.5", "microsoft/phi-1_5"),
    "phi-2": ("phi-2", "microsoft/phi-2"),
    "zephyr-7b-beta": ("zephyr-7b-beta", "HuggingFaceH4/zephyr-7b-beta"),
}


def aitk(*args, cwd=None, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("template", NAMES)
def test_every_form_value_arrives_and_aitk_files_stay(tmp_path, template):
    root = tmp_path / template
    materialise(template, root, FORM)
    before = digests(root)
    code, out, err = aitk("project", "import", str(root))
    assert code == 0, err
    assert all(digests(root)[rel] == digest for rel, digest in before.items()), "an AI Toolkit file changed"
    assert not (set(digests(root)) - set(before)) - {
        "aitk.toml", "AITK.md", "finetuning/aitk-olive-config.json", "inference/aitk_console_chat.py",
        "dataset/aitk-train.jsonl", "dataset/aitk-eval.jsonl"}
    s = tomllib.loads((root / "aitk.toml").read_text())
    for (section, key), value in EXPECTED.items():
        assert s[section][key] == value, f"{section}.{key}"
    assert (s["model"]["id"], s["model"]["path"]) == MODELS[template]
    # eval_dataset_size 0.25 is a real held-out split of the 1464 rows, seeded by data_seed.
    train = (root / "dataset/aitk-train.jsonl").read_text().splitlines()
    held = (root / "dataset/aitk-eval.jsonl").read_text().splitlines()
    source = [l for l in (root / "dataset/dataset-classification.json").read_text().splitlines() if l.strip()]
    assert (len(train), len(held)) == (1098, 366)
    key = lambda line: json.dumps(json.loads(line), sort_keys=True)  # noqa: E731
    assert sorted(map(key, train + held)) == sorted(map(key, source))
    assert s["data"]["eval_dataset"] == "dataset/aitk-eval.jsonl"
    # Training arguments the settings do not model are kept and reach Olive.
    extra = {"group_by_length": True, "adam_beta2": 0.999, "max_grad_norm": 0.3}
    assert s["finetune"]["extra_training_args"] == extra
    olive = json.loads((root / "finetuning/aitk-olive-config.json").read_text())
    args = olive["passes"]["finetune"]["training_args"]
    assert {k: args[k] for k in extra} == extra
    assert olive["passes"]["finetune"]["r"] == 24 and olive["passes"]["finetune"]["alpha"] == 48.0
    # Shown: every value with its source, and what was not carried.
    assert "finetune.lora_r = 24   <- finetuning/olive-config.json passes.qlora.lora_r" in out
    assert "passes.OnnxConversion (OnnxConversion): replaced by `aitk export`" in out
    assert "conda environment" in out
    # Idempotent: the second import changes nothing and says so.
    after = digests(root)
    code, out, err = aitk("project", "import", str(root))
    assert code == 0, err
    assert "already imported" in out and digests(root) == after


def test_the_contradicting_template_is_reported_and_the_download_wins(tmp_path):
    root = tmp_path / "m"
    materialise("mistral-7b-v02", root)
    (root / "model-cache/mistralai/Mistral-7B").mkdir(parents=True)
    (root / "model-cache/mistralai/Mistral-7B/config.json").write_text(
        json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}))
    code, out, err = aitk("project", "import", str(root), "--dry-run")
    assert code == 0, err
    assert "downloads mistralai/Mistral-7B-Instruct-v0.2 into model-cache/mistralai/Mistral-7B but its Olive " \
           "config reads model-cache/mistralai/Mistral-7B-Instruct-v0.2" in out
    assert "model.path = 'model-cache/mistralai/Mistral-7B'" in out
    assert "nothing written" in out and not (root / "aitk.toml").exists()


def test_provisioned_azure_values_are_kept_and_shown(tmp_path):
    root = tmp_path / "az"
    materialise("phi-2", root)
    infra = root / "infra/finetuning.config.json"
    cfg = json.loads(infra.read_text())
    cfg.update(SUBSCRIPTION_ID="0000-sub", RESOURCE_GROUP_NAME="rg1", STORAGE_ACCOUNT_NAME="aistorageab12c",
               FILE_SHARE_NAME="aifileshareab12c", ACA_JOB_NAME="aiacajobab12c")
    infra.write_text(json.dumps(cfg, indent=2))
    code, out, err = aitk("project", "import", str(root), "--to", str(tmp_path / "ours"))
    assert code == 0, err
    assert "Azure resources (infra/finetuning.config.json):" in out and "ACA_JOB_NAME = aiacajobab12c" in out
    ours = tmp_path / "ours"
    assert json.loads((ours / "infra/finetuning.config.json").read_text())["ACA_JOB_NAME"] == "aiacajobab12c"
    s = tomllib.loads((ours / "aitk.toml").read_text())
    assert s["target"]["where"] == "azure" and s["name"] == "ours"
    assert (ours / "finetuning/olive-config.json").is_file() and not (ours / "setup").exists()
    assert (ours / s["data"]["dataset"]).is_file() and (ours / s["data"]["eval_dataset"]).is_file()


def test_a_folder_that_is_neither_is_refused(tmp_path):
    (tmp_path / "plain").mkdir()
    code, out, err = aitk("project", "import", str(tmp_path / "plain"))
    assert code == 2 and "is not an AI Toolkit project" in err and "hint:" in err
    code, _, err = aitk("project", "new", str(tmp_path / "ours"))
    assert code == 0, err
    code, _, err = aitk("project", "import", str(tmp_path / "ours"))
    assert code == 2 and "it is an aitk project already" in err


def test_an_unfilled_placeholder_is_taken_from_the_form(tmp_path):
    root = tmp_path / "p"
    materialise("phi-2", root)
    config = root / "finetuning/olive-config.json"
    config.write_text(config.read_text().replace('"models/checkpoints"', '"<output_dir>"'))
    code, out, err = aitk("project", "import", str(root))
    assert code == 0, err
    assert "setup/project-settings.json <output_dir>" in out
    assert tomllib.loads((root / "aitk.toml").read_text())["finetune"]["checkpoint_dir"] == "models/checkpoints"


@pytest.mark.slow
def test_an_imported_phi3_project_switched_to_the_tiny_model_finetunes_exports_and_chats(tmp_path, tiny_test_model):
    root = tmp_path / "phi3"
    materialise("Phi-3-mini-4k-instruct", root)
    before = digests(root)
    assert aitk("project", "import", str(root))[0] == 0
    # The tiny model instead of Phi-3; the imported QLoRA settings otherwise, shortened for 2 CPU cores.
    code, _, err = aitk("project", "set", "-P", str(root), "model.id=tiny", f"model.path={tiny_test_model}",
                        "finetune.max_steps=8", "data.source_max_len=64", "finetune.per_device_eval_batch_size=64")
    assert code == 0, err
    code, out, err = aitk("finetune", "-P", str(root))
    assert code == 0, out + err
    job = out.split("job ", 1)[1].split()[0]
    from aitk.core import paths

    ran = json.loads((paths.data_dir() / "jobs" / job / "olive-config.json").read_text())
    ft = ran["passes"]["finetune"]
    assert ft["type"] == "QLoRA" and ft["r"] == 64 and ft["quant_type"] == "nf4"
    assert {k: ft["training_args"][k] for k in ("max_grad_norm", "adam_beta2", "group_by_length")} == \
        {"max_grad_norm": 0.3, "adam_beta2": 0.999, "group_by_length": True}
    assert ran["data_configs"][1]["load_dataset_config"]["data_files"].endswith("dataset/aitk-eval.jsonl")
    code, out, err = aitk("export", "-P", str(root), timeout=600)  # the export, then its parity check
    assert code == 0, out + err
    assert (root / f"models/onnx/int4/adapters/{job}.onnx_adapter").is_file()  # named by its job
    code, out, err = aitk("chat", "-P", str(root), "-p", "I'm thrilled to start my new job!")
    assert code == 0 and out.strip(), err
    # AI Toolkit's own files are still as generated, after all of that.
    assert {rel: d for rel, d in digests(root).items() if rel in before} == before


def test_export_aitk_writes_ai_toolkits_layout_and_imports_back(tmp_path):
    root = tmp_path / "qa"
    code, _, err = aitk("project", "new", str(root), "--set", "finetune.lora_r=12", "--set",
                        "finetune.extra_training_args={max_grad_norm = 0.5}")
    assert code == 0, err
    code, out, err = aitk("project", "export-aitk", "-P", str(root))
    assert code == 0, err
    for rel in ("setup/project-settings.json", "finetuning/olive-config.json", "finetuning/invoke_olive.py",
                "infra/finetuning.config.json", "infra/inference.config.json"):
        assert f"wrote {root / rel}" in out
    form = {f["replaceToken"]: f["defaultValue"] for g in json.loads((root / "setup/project-settings.json").read_text())
            for f in g["fields"]}
    assert form["<lora_r>"] == 12 and form["<text_template>"] == "<|user|>\\n{question}<|end|>\\n<|assistant|>\\n{answer}<|end|>"
    assert form["<eval_dataset_size>"] > 0
    config = json.loads((root / "finetuning/olive-config.json").read_text())
    assert config["passes"]["lora"]["lora_r"] == 12 and config["input_model"]["model_path"] == "model"
    assert config["passes"]["lora"]["training_args"]["max_grad_norm"] == 0.5
    # aitk's own files moved to their names in an AI Toolkit folder; the project still works.
    assert (root / "finetuning/aitk-olive-config.json").is_file() and (root / "inference/aitk_console_chat.py").is_file()
    assert (root / "AITK.md").is_file() and not (root / "README.md").exists()
    code, _, err = aitk("project", "set", "-P", str(root), "finetune.lora_r=16")
    assert code == 0, err
    assert json.loads((root / "finetuning/olive-config.json").read_text())["passes"]["lora"]["lora_r"] == 12
    # And AI Toolkit's layout imports back to the same settings.
    aitk("project", "set", "-P", str(root), "finetune.lora_r=12")
    code, _, err = aitk("project", "export-aitk", "-P", str(root))
    assert code == 0, err
    code, out, err = aitk("project", "import", str(root), "--to", str(tmp_path / "back"))
    assert code == 0, err
    a, b = (tomllib.loads((p / "aitk.toml").read_text()) for p in (root, tmp_path / "back"))
    for section, key in (("finetune", "lora_r"), ("finetune", "extra_training_args"), ("data", "text_template"),
                         ("finetune", "learning_rate"), ("finetune", "max_steps"), ("inference", "prompt_template"),
                         ("data", "text_columns"), ("finetune", "target_modules"), ("model", "id")):
        assert a[section][key] == b[section][key], f"{section}.{key}"


def test_changed_settings_are_never_overwritten_by_a_second_import(tmp_path):
    root = tmp_path / "p"
    materialise("zephyr-7b-beta", root, {"<compute_dtype>": "float16"})
    code, out, err = aitk("project", "import", str(root))
    assert code == 0, err
    s = tomllib.loads((root / "aitk.toml").read_text())
    assert s["finetune"]["compute_dtype"] == "float16"
    assert s["target"]["device"] == "cuda" or "target.device = 'cuda'" not in out
    assert aitk("project", "set", "-P", str(root), "finetune.max_steps=5")[0] == 0
    changed = (root / "aitk.toml").read_bytes()
    code, _, err = aitk("project", "import", str(root))
    assert code == 2 and "differs from what AI Toolkit's files say" in err
    assert (root / "aitk.toml").read_bytes() == changed
