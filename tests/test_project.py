"""Settings, Olive config and the project generator: validation, atomicity, round trips."""

from __future__ import annotations

import json
import os
import tomllib

import pytest
from pydantic import ValidationError

from aitk.core import olive_config, project as projmod, tiny
from aitk.core.errors import AitkError
from aitk.core.project import OLIVE_CONFIG, create_project, load_project, regenerate
from aitk.core.defaults import default_settings
from aitk.core.settings import ProjectSettings


@pytest.fixture()
def made(tmp_path, tiny_test_model):
    return create_project(tmp_path / "proj", tiny_spec=tiny.TEST)


def test_project_folder_is_self_contained(made):
    root = made.root
    for rel in ("aitk.toml", "README.md", "finetuning/olive-config.json", "inference/console_chat.py",
                "dataset/train.jsonl", "dataset/eval.jsonl", "model/config.json", "model/tokenizer.json"):
        assert (root / rel).is_file(), rel
    config = json.loads((root / OLIVE_CONFIG).read_text())
    # Relative paths: the config runs from the project root with `olive run`, without aitk.
    assert config["input_model"]["model_path"] == "model"
    train = config["data_configs"][0]
    assert train["load_dataset_config"] == {"data_name": "json", "data_files": "dataset/train.jsonl", "split": "train"}
    assert train["pre_process_data_config"]["strategy"] == "line-by-line"
    assert config["passes"]["finetune"]["eval_data_config"] == "eval_data"
    assert config["passes"]["finetune"]["training_args"]["output_dir"] == "models/checkpoints"
    assert config["clean_cache"] is True
    assert "{" not in (root / "inference/console_chat.py").read_text().split("import onnxruntime_genai")[0].replace(
        "{}", "")  # no unreplaced placeholders in the docstring


def test_round_trip_and_regenerate(made):
    loaded = load_project(made.root)
    assert loaded.settings == made.settings
    before = {p: (made.root / p).read_bytes() for p in ("aitk.toml", "finetuning/olive-config.json", "README.md")}
    regenerate(loaded)
    after = {p: (made.root / p).read_bytes() for p in before}
    assert before == after
    # An edited setting flows into the regenerated Olive config.
    loaded.settings.finetune.lora_r = 8
    regenerate(loaded)
    config = json.loads((made.root / OLIVE_CONFIG).read_text())
    assert config["passes"]["finetune"]["r"] == 8
    assert tomllib.loads((made.root / "aitk.toml").read_text())["finetune"]["lora_r"] == 8
    assert not [p for p in made.root.iterdir() if p.name.startswith(".regen")]


def test_refuses_to_overwrite(made):
    with pytest.raises(AitkError, match="already exists"):
        create_project(made.root, tiny_spec=tiny.TEST)


@pytest.mark.parametrize("name", ["..", ".hidden", "a b", "x" * 65, "-dash", "semi;colon", "ünï"])
def test_bad_project_names_rejected(tmp_path, name):
    with pytest.raises(AitkError, match="not a usable project name"):
        create_project(tmp_path / name, tiny_spec=tiny.TEST)
    assert list(tmp_path.iterdir()) == []


def test_path_tricks_rejected():
    for name in ("../evil", "a/b", "/abs"):
        with pytest.raises(ValidationError):
            ProjectSettings(name=name)


def test_failed_create_leaves_nothing(tmp_path, tiny_test_model, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(projmod, "_write_generated", boom)
    with pytest.raises(RuntimeError):
        create_project(tmp_path / "p", tiny_spec=tiny.TEST)
    assert list(tmp_path.iterdir()) == []


def test_missing_dataset_file_is_clear(tmp_path, tiny_test_model):
    with pytest.raises(AitkError, match="dataset file not found"):
        create_project(tmp_path / "p", dataset=str(tmp_path / "nope.jsonl"), tiny_spec=tiny.TEST)
    assert list(tmp_path.iterdir()) == []


def test_own_dataset_is_copied_in(tmp_path, tiny_test_model):
    data = tmp_path / "mine.csv"
    data.write_text("question,answer\nQ?,A.\n")
    p = create_project(tmp_path / "p", dataset=str(data), tiny_spec=tiny.TEST)
    assert p.settings.data.dataset == "dataset/mine.csv"
    assert p.settings.data.eval_dataset is None
    config = json.loads((p.root / OLIVE_CONFIG).read_text())
    assert config["data_configs"][0]["load_dataset_config"]["data_name"] == "csv"
    assert "eval_data_config" not in config["passes"]["finetune"]


def test_hub_dataset_name_kept(tmp_path, tiny_test_model):
    p = create_project(tmp_path / "p", dataset="someone/qa:default", tiny_spec=tiny.TEST)
    config = json.loads((p.root / OLIVE_CONFIG).read_text())
    assert config["data_configs"][0]["load_dataset_config"] == {"data_name": "someone/qa", "split": "train",
                                                               "subset": "default"}


def test_broken_toml_is_one_clear_error(made):
    (made.root / "aitk.toml").write_text("name = 'x'\n[finetune]\nlora_r = -3\n")
    with pytest.raises(AitkError, match=r"finetune\.lora_r"):
        load_project(made.root)
    (made.root / "aitk.toml").write_text("this is = = not toml")
    with pytest.raises(AitkError, match="not valid TOML"):
        load_project(made.root)


def test_impossible_choices_refused_with_alternative():
    s = ProjectSettings(name="p")
    s.finetune.method = "qlora"
    s.finetune.loftq = True
    with pytest.raises(AitkError) as e:
        olive_config.pass_config(s, "cpu")
    assert "LoftQ needs a CUDA GPU" in str(e.value) and "qlora" in e.value.hint
    assert olive_config.pass_config(s, "cuda")["type"] == "LoftQ"
    s.finetune.loftq = False
    s.finetune.compute_dtype = "float16"
    with pytest.raises(AitkError, match="float16 training needs a CUDA GPU"):
        olive_config.pass_config(s, "cpu")
    s.finetune.compute_dtype = "float32"
    with pytest.raises(AitkError, match="DirectML"):
        olive_config.pass_config(s, "dml")


def test_qlora_pass_on_cpu_uses_plain_adamw():
    s = ProjectSettings(name="p")
    s.finetune.method = "qlora"
    p = olive_config.pass_config(s, "cpu")
    assert p["type"] == "QLoRA" and p["quant_type"] == "nf4" and p["double_quant"] is True
    assert p["training_args"]["optim"] == "adamw_torch"
    assert olive_config.pass_config(s, "cuda")["training_args"]["optim"] == "paged_adamw_32bit"


def test_settings_bounds_and_help():
    with pytest.raises(ValidationError):
        ProjectSettings(name="p", finetune={"lora_r": 0})
    with pytest.raises(ValidationError):
        ProjectSettings(name="p", finetune={"learning_rate": 5})
    with pytest.raises(ValidationError):
        ProjectSettings(name="p", data={"text_template": "no fields"})
    with pytest.raises(ValidationError):
        ProjectSettings(name="p", finetune={"max_steps": 0})
    # Every field of every section explains itself (the wizard and CLI show these).
    for section in ("model", "data", "finetune", "inference", "target"):
        fields = type(getattr(ProjectSettings(name="p"), section)).model_fields
        assert all(f.description for f in fields.values()), section


def test_defaults_per_model_and_device():
    cpu = default_settings("p", "microsoft/Phi-3-mini-4k-instruct", "cpu")
    gpu = default_settings("p", "microsoft/Phi-3-mini-4k-instruct", "cuda")
    assert (cpu.finetune.method, cpu.finetune.compute_dtype) == ("lora", "float32")
    assert (gpu.finetune.method, gpu.finetune.compute_dtype) == ("qlora", "bfloat16")
    assert gpu.finetune.learning_rate == 1e-4 and gpu.finetune.lora_alpha == 64  # AI Toolkit's Phi-3 defaults
    assert gpu.inference.precision == "fp16" and cpu.inference.precision == "int4"
    assert default_settings("p").model.id == "tiny"


def test_catalog_model_project_uses_its_repo_targets_and_format(tmp_path):
    p = create_project(tmp_path / "qwen", model_id="qwen2.5-0.5b")
    s = p.settings
    assert s.model.path.startswith("Qwen/") and s.model.id == "qwen2.5-0.5b"
    assert "<|im_start|>user\n{question}" in s.data.text_template
    assert s.finetune.target_modules and not (p.root / "model").exists()
    config = json.loads((p.root / OLIVE_CONFIG).read_text())
    assert config["input_model"]["model_path"] == s.model.path
    assert (p.root / "dataset" / "train.jsonl").is_file()  # the bundled data, in this model's format


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(AitkError, match="nope"):
        create_project(tmp_path / "x", model_id="nope")
    assert list(tmp_path.iterdir()) == []
