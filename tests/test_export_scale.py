"""Exports at the machine's speed: fp32 LoRA weights in an int4 export, the thread option, and
the merged export answering what the adapter export answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from aitk.core import threads


@pytest.fixture(scope="module")
def qwen_adapter(qwen_model, tmp_path_factory):
    """A random (non-zero) LoRA adapter on every projection of the BOS-less Qwen2 shape model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dest = tmp_path_factory.mktemp("qwen-adapter")
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(qwen_model)), LoraConfig(
        r=8, lora_alpha=16, init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.save_pretrained(dest)
    return dest


def test_physical_cores_counts_cores_not_hyperthreads():
    n = threads.physical_cores()
    assert 1 <= n <= len(__import__("os").sched_getaffinity(0))


def test_int4_export_keeps_lora_fp32_and_carries_the_thread_option(qwen_model, qwen_adapter, tmp_path):
    import onnxruntime as ort

    from aitk.core.chat import GenaiChatEngine
    from aitk.core.export import export_model

    dest = export_model(str(qwen_model), qwen_adapter, tmp_path / "int4", precision="int4")
    params = ort.AdapterFormat.read_adapter(str(dest / "adapters" / "tuned.onnx_adapter")).get_parameters()
    assert len(params) == 2 * 7 * 2  # layers x wrapped projections x (A, B)
    assert {v.numpy().dtype.name for v in params.values()} == {"float32"}
    config = json.loads((dest / "genai_config.json").read_text())
    assert config["model"]["decoder"]["session_options"]["intra_op_num_threads"] == threads.physical_cores()
    assert GenaiChatEngine(dest).threads == threads.physical_cores()

    # An export made on a machine with other cores is run with this machine's count.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dest, elsewhere)
    threads.set_session_threads(config, 64)
    (elsewhere / "genai_config.json").write_text(json.dumps(config))
    engine = GenaiChatEngine(elsewhere)
    assert engine.threads == threads.physical_cores()
    assert engine.stream([{"role": "user", "content": "hi"}], adapter="tuned").read() is not None


def _answers(engine, rows, adapter):
    from aitk.core.chat import GenerationOptions

    return [engine.stream([{"role": "user", "content": r["question"]}], GenerationOptions(max_new_tokens=12),
                          adapter=adapter).read() for r in rows]


@pytest.mark.slow
def test_merged_export_answers_what_the_adapter_export_answers(trained, rows, tmp_path):
    from aitk.core import project_index
    from aitk.core.chat import GenaiChatEngine, MergedTunedEngine
    from aitk.core.server import open_engine, open_export

    project, _, _ = trained
    root = tmp_path / "copy"
    shutil.copytree(project.root, root, symlinks=True)
    out = subprocess.run([sys.executable, "-m", "aitk.cli.main", "export", "--merged", "--precision", "fp32"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    merged_dir = root / "models" / "onnx" / "fp32-merged"
    assert not (merged_dir / "adapters").exists()
    states = {e.precision: e.summary for e in project_index.exports(root)}
    assert states == {"fp32": "current", "fp32-merged": "current"}

    name, engine = open_engine(str(root), "fp32")
    assert isinstance(engine, MergedTunedEngine) and engine.adapters == [trained[1].id]
    adapter_form = GenaiChatEngine(root / "models" / "onnx" / "fp32")
    held = rows[:16]
    assert _answers(engine, held, "tuned") == _answers(adapter_form, held, "tuned")
    assert _answers(engine, held[:4], "base") == _answers(adapter_form, held[:4], "base")
    # The app's Chat pane opens the adapter export's folder: its tuned model is the merged one too,
    # and a folder outside a project is opened as it is.
    pane_engine = open_export(root / "models" / "onnx" / "fp32")
    assert isinstance(pane_engine, MergedTunedEngine) and pane_engine.active == trained[1].id
    assert isinstance(open_export(merged_dir), GenaiChatEngine)

    chat = subprocess.run([sys.executable, "-m", "aitk.cli.main", "chat", "--precision", "fp32", "-p",
                           held[0]["question"]], cwd=root, capture_output=True, text=True, timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() == _answers(adapter_form, held[:1], "tuned")[0].strip()


@pytest.mark.slow
def test_finetune_writes_no_copy_of_the_base_model(trained):
    from aitk.core.jobs import JobStore

    project, ft_rec, _ = trained
    output = JobStore().job_dir(ft_rec.id) / "output"
    assert (output / "adapter" / "adapter_config.json").is_file()
    assert not (output / "model").exists()
    saved = json.loads((output / "model_config.json").read_text())["config"]
    assert saved["model_path"] == project.base_model_path()
