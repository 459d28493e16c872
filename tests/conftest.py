"""Every test session gets its own data/config/cache/projects dirs, and nothing reaches a hub.

Set in os.environ (not monkeypatch) because job processes the tests start inherit them.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="aitk-tests-"))
for _name in ("DATA", "CONFIG", "CACHE", "PROJECTS"):
    os.environ[f"AITK_{_name}_DIR"] = str(_ROOT / _name.lower())
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CI": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HOME": str(_ROOT / "hf")})


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _ROOT


@pytest.fixture(scope="session")
def tiny_test_model() -> Path:
    """The small tiny-model variant, built once per session."""
    from aitk.core import tiny

    return tiny.ensure_tiny(tiny.TEST)


# -- one real fine-tune + export per session, shared by the pipeline, server and app tests --------
N_ROWS = 48


def wait_for(pred, timeout=180, what="condition"):
    """`pred()`'s first true value, polled every 50 ms; fails the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait(provider, job_id, timeout=900):
    deadline = time.time() + timeout
    while not (rec := provider.status(job_id)).is_final:
        assert time.time() < deadline, f"job {job_id} still {rec.status}"
        time.sleep(0.2)
    return rec


@pytest.fixture(scope="session")
def rows():
    from aitk.core import paths

    lines = (paths.bundled_data() / "tiny_qa" / "train.jsonl").read_text().splitlines()[:N_ROWS]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_test_model, rows):
    from aitk.core import tiny
    from aitk.core.project import create_project, load_project, regenerate
    from aitk.providers.local import LocalProvider

    base = tmp_path_factory.mktemp("pipeline")
    data = base / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    project = create_project(base / "proj", dataset=str(data), tiny_spec=tiny.TEST)
    f = project.settings.finetune
    f.max_steps, f.save_steps, f.logging_steps, f.lora_r, f.lora_alpha = 400, 100, 10, 64, 128.0
    f.learning_rate = 3e-3
    f.eval_steps = 25  # the first eval lands on the steep part of the curve, not on its plateau
    project.settings.data.eval_dataset = "dataset/qa.jsonl"  # eval on the same rows: loss must fall too
    regenerate(project)
    provider = LocalProvider()
    ft = provider.submit("finetune", project.root)
    ex = provider.submit("export", project.root, parent=ft.id, params={"precision": "fp32"})
    ft_rec, ex_rec = wait(provider, ft.id), wait(provider, ex.id)
    log = provider.store.log_path(ft.id).read_text()[-3000:]
    assert ft_rec.status == "succeeded", log
    assert ex_rec.status == "succeeded", provider.store.log_path(ex.id).read_text()[-3000:]
    return load_project(project.root), ft_rec, ex_rec


@pytest.fixture(scope="session")
def learned(trained, rows):
    """The held rows the tuned model answers exactly, asked through the engine directly.

    Training on 2 CPU threads is not bit-for-bit repeatable and a few rows land either side of
    the line from run to run; tests of what serves the model (server, scripts, CLI) ask these
    rows, so they test the serving, while test_pipeline judges how much was learned."""
    from aitk.core.chat import GenaiChatEngine, GenerationOptions

    project, _, _ = trained
    engine = GenaiChatEngine(project.onnx_dir("fp32"))
    ok = [r for r in rows[:16] if engine.stream([{"role": "user", "content": r["question"]}],
                                                GenerationOptions(max_new_tokens=12),
                                                adapter="tuned").read().strip() == r["answer"]]
    assert len(ok) >= 8, f"only {len(ok)}/16 held rows learned"
    return ok


@pytest.fixture
def world(tmp_path, monkeypatch):
    """The app's world on fixtures (its own data dir, projects, jobs); test files that need another
    world (catalog models, a wizard model, snapshots' fixed root) define their own."""
    from aitk.tui import testing

    w = testing.World(tmp_path / "aitk", monkeypatch.setenv)
    yield w
    w.close()


# -- a small BOS-less Qwen2-architecture model (Qwen2.5's special tokens and chat format) ---------
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN_TEXT_TEMPLATE = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>"


@pytest.fixture(scope="session")
def qwen_model(tmp_path_factory) -> Path:
    """Hidden 64, 2 layers, 4 heads / 2 KV heads, random weights; a tokenizer trained on the
    bundled data with `bos_token: null` like Qwen2.5's."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from aitk.core import tiny

    dest = tmp_path_factory.mktemp("qwen-shape")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(tiny.tokenizer_corpus(), trainer=trainers.BpeTrainer(
        vocab_size=1024, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    ids = {t: raw.token_to_id(t) for t in specials}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=None, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", model_max_length=256)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.save_pretrained(dest)
    config = Qwen2Config(vocab_size=raw.get_vocab_size(), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=True, initializer_range=0.2)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def snapshots_in_tests_snapshots():
    """Snapshot modules keep their SVGs in tests/snapshots/<module>/ rather than syrupy's
    __snapshots__ (`pytestmark = pytest.mark.usefixtures("snapshots_in_tests_snapshots")`)."""
    import pytest_textual_snapshot

    cls = pytest_textual_snapshot.SVGImageExtension
    assert "dirname" not in cls.__dict__  # inherited from syrupy: removing ours restores it

    def dirname(klass, *, test_location):
        return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)

    cls.dirname = classmethod(dirname)
    yield
    del cls.dirname


@pytest.fixture
def wizard_world(tmp_path, monkeypatch):
    """The app's world with a stand-in tiny model (config and an empty weights file: the base-model
    preflight looks for weights), so the wizard never builds the real one."""
    from aitk.tui import testing

    w = testing.World(tmp_path / "aitk", monkeypatch.setenv)
    fake_model = tmp_path / "tiny-model"
    fake_model.mkdir()
    (fake_model / "config.json").write_text("{}")
    (fake_model / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr("aitk.core.tiny.is_built", lambda *a, **k: True)
    monkeypatch.setattr("aitk.core.tiny.ensure_tiny", lambda *a, **k: fake_model)
    yield w
    w.close()


@pytest.fixture
def snapshot_world(request, monkeypatch):
    """The app's world at the snapshot module's fixed `ROOT` (paths show in its pictures)."""
    from aitk.tui import testing

    w = testing.World(request.module.ROOT, monkeypatch.setenv)
    yield w
    w.close()
