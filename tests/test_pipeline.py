"""The real pipeline on the small tiny model: Olive fine-tune job -> ONNX export job -> chat.

Slow by nature (a real training run, ~40 s on 2 cores), so it runs once per session and every
test here reads its results.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from aitk.core.chat import GenaiChatEngine, GenerationOptions, TorchChatEngine
from aitk.core.jobs import JobStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def engine(trained):
    project, _, _ = trained
    return GenaiChatEngine(project.onnx_dir("fp32"))


def answers(engine, rows, adapter):
    return [engine.stream([{"role": "user", "content": r["question"]}], GenerationOptions(max_new_tokens=12),
                          adapter=adapter).read().strip() for r in rows]


def test_training_loss_falls_and_metrics_are_structured(trained):
    _, ft, _ = trained
    metrics = JobStore().metrics(ft.id)
    losses = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "eval_loss" in m]
    assert len(losses) >= 20 and len(evals) >= 2
    assert losses[-1]["loss"] < 0.5 * losses[0]["loss"]
    # Loss plateaus (prompt tokens are unpredictable), so compare the end with the first eval.
    assert evals[-1]["eval_loss"] < 0.9 * evals[0]["eval_loss"]
    steps = [m["step"] for m in losses]
    assert steps == sorted(set(steps)), "no step twice"
    assert all({"step", "max_steps", "epoch", "learning_rate", "t"} <= m.keys() for m in losses)
    assert any(m.get("event") == "checkpoint" for m in metrics)


def test_tuned_answers_most_held_questions_base_none(engine, rows):
    held = rows[:16]
    tuned = answers(engine, held, "tuned")
    base = answers(engine, held, "base")
    expected = [r["answer"] for r in held]
    tuned_ok = sum(a == e for a, e in zip(tuned, expected))
    base_ok = sum(a == e for a, e in zip(base, expected))
    assert tuned_ok >= 10, list(zip(tuned, expected))
    assert base_ok == 0


def test_adapter_switches_behaviour_on_one_loaded_model(engine, rows, trained):
    q = [{"role": "user", "content": rows[0]["question"]}]
    opts = GenerationOptions(max_new_tokens=12)
    seq = [engine.stream(q, opts, adapter=a).read() for a in ("tuned", "base", "tuned", None)]
    assert seq[0] == seq[2] and seq[1] == seq[3] and seq[0] != seq[1]
    assert engine.adapters == [trained[1].id] == [engine.active]  # named by its job; `tuned` is the active one


def test_export_layout(trained):
    project, _, _ = trained
    onnx = project.onnx_dir("fp32")
    _, ft, _ = trained
    assert (onnx / "adapters" / f"{ft.id}.onnx_adapter").stat().st_size > 0  # named by its job
    for name in ("model.onnx", "genai_config.json", "tokenizer.json", "aitk-export.json"):
        assert (onnx / name).is_file(), name


def test_history_is_used(engine, rows):
    """The whole conversation goes into the prompt, not just the last message."""
    one = engine.prompt([{"role": "user", "content": "hi"}])
    two = engine.prompt([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                         {"role": "user", "content": rows[0]["question"]}])
    assert two.startswith(one.removesuffix("<|assistant|>\n")) and "yo<|end|>" in two


def test_stop_mid_generation(engine):
    stop = threading.Event()
    stream = engine.stream([{"role": "user", "content": "Tell me everything"}],
                           GenerationOptions(max_new_tokens=400, temperature=1.0), adapter="base", stop=stop)
    for i, _ in enumerate(stream):
        if i == 3:
            stop.set()
    assert stream.stopped and stream.tokens < 20


def test_sampling_options_are_honoured(engine, rows):
    q = [{"role": "user", "content": rows[1]["question"]}]
    greedy = {engine.stream(q, GenerationOptions(max_new_tokens=12), adapter="base").read() for _ in range(3)}
    assert len(greedy) == 1
    hot = {engine.stream(q, GenerationOptions(max_new_tokens=12, temperature=2.0, top_k=0, top_p=1.0),
                         adapter="base").read() for _ in range(4)}
    assert len(hot) > 1


def test_torch_engine_agrees_with_onnx(trained, engine, rows):
    project, _, _ = trained
    torch_engine = TorchChatEngine(project.base_model_path(), project.adapter_dir)
    q = [{"role": "user", "content": rows[2]["question"]}]
    opts = GenerationOptions(max_new_tokens=12)
    for adapter in ("tuned", "base"):
        # Same greedy tokens; the decoders differ only on stray partial UTF-8 bytes (U+FFFD).
        def text(e):
            return e.stream(q, opts, adapter=adapter).read().replace("\ufffd", "").strip()

        assert text(torch_engine) == text(engine)


def test_generated_config_runs_with_plain_olive(trained, tmp_path):
    """The project's own config runs with `olive run`, no aitk involved (few steps)."""
    project, _, _ = trained
    import shutil

    copy = tmp_path / "standalone"
    shutil.copytree(project.root, copy, ignore=shutil.ignore_patterns("models"))
    config = json.loads((copy / "finetuning/olive-config.json").read_text())
    config["passes"]["finetune"]["training_args"].update(max_steps=6, save_steps=3, eval_steps=3)
    (copy / "finetuning/olive-config.json").write_text(json.dumps(config))
    olive = [sys.executable, "-m", "olive", "run", "--config", "finetuning/olive-config.json"]
    proc = subprocess.run(olive, cwd=copy, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (copy / "models/olive/adapter/adapter_config.json").is_file()
    assert (copy / "models/checkpoints/checkpoint-6").is_dir()
    # aitk lists Olive's output as the adapter `olive` (active: the only one) and files it by name.
    aitk = [sys.executable, "-m", "aitk.cli.main", "adapters"]
    listed = subprocess.run([*aitk, "list", "-P", str(copy)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[:2] == ["*", "olive"], listed
    filed = subprocess.run([*aitk, "rename", "olive", "plain-olive", "-P", str(copy)], capture_output=True,
                           text=True, timeout=60)
    assert filed.returncode == 0, filed.stderr
    assert (copy / "models/adapters/plain-olive/adapter_config.json").is_file()
    assert not (copy / "models/olive/adapter").exists()  # the next `olive run` writes a fresh one


def test_project_console_chat_script(trained, learned):
    """The generated inference/console_chat.py works with nothing but onnxruntime-genai."""
    project, _, _ = trained
    script = project.root / "inference" / "console_chat.py"
    for flag, expect_hit in (([], True), (["--base"], False)):
        proc = subprocess.run([sys.executable, str(script), *flag], input=learned[0]["question"] + "\n\n",
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert (learned[0]["answer"] in proc.stdout) == expect_hit, proc.stdout


def test_evaluate_job_records_before_and_after(trained):
    from aitk.providers.local import LocalProvider

    project, _, _ = trained
    provider = LocalProvider()
    rec = provider.submit("evaluate", project.root)
    deadline = time.time() + 180
    while not (rec := provider.status(rec.id)).is_final:
        assert time.time() < deadline
        time.sleep(0.2)
    assert rec.status == "succeeded", provider.store.log_path(rec.id).read_text()[-2000:]
    result = rec.result
    assert result["rows"] == 48 and result["tokens"] > 500
    assert result["tuned"]["loss"] < 0.6 * result["base"]["loss"]
    assert result["tuned"]["perplexity"] < result["base"]["perplexity"]
