"""What training sees: the Olive config's dtype and special tokens, rendered by Olive itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aitk.core import olive_config, training_text
from aitk.core.settings import ProjectSettings

from conftest import QWEN_TEXT_TEMPLATE

ROW = {"question": "What colour is a Touxkru bird?", "answer": "Glodan."}


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_cpu_trains_in_float32_for_every_method(method):
    s = ProjectSettings(name="p")
    s.finetune.method = method
    s.finetune.compute_dtype = "bfloat16"  # asked for, but an AVX2 CPU runs it ~19x slower
    assert olive_config.pass_config(s, "cpu")["torch_dtype"] == "float32"
    assert olive_config.pass_config(s, "cuda")["torch_dtype"] in ("bfloat16", "float16")


def _olive_texts(model_dir, data_config: dict, rows: list[dict]) -> list[str]:
    """The samples Olive's own pre-processing builds from `data_config`, decoded."""
    from datasets import Dataset
    from olive.data.component.text_generation import text_gen_pre_process
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    params = dict(data_config["pre_process_data_config"])
    out = text_gen_pre_process(Dataset.from_list(rows), tokenizer, params)
    return [tokenizer.decode([t for t in out[i][0]["input_ids"].tolist() if t != tokenizer.pad_token_id])
            for i in range(len(rows))]


def test_bos_less_tokenizer_renders_no_none_and_one_end_token(qwen_model):
    s = ProjectSettings(name="p")
    s.model.path = str(qwen_model)
    s.data.text_template = QWEN_TEXT_TEMPLATE
    s.data.pad_to_max_len = False
    config = olive_config.build(s, "cpu")
    train = config["data_configs"][0]
    assert train["pre_process_data_config"]["add_special_tokens"] is False
    [text] = _olive_texts(qwen_model, train, [ROW])
    assert "None" not in text and text.count("<|im_end|>") == 2  # one per turn, none doubled
    assert text == QWEN_TEXT_TEMPLATE.format(**ROW)
    tokens = training_text.special_tokens(qwen_model)
    assert tokens.bos is None and tokens.eos == "<|im_end|>"
    assert training_text.training_text(QWEN_TEXT_TEMPLATE, ROW, tokens) == text


def test_bos_from_the_chat_template_and_eos_when_the_template_lacks_an_end(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>",
        "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"}))
    tokens = training_text.special_tokens(folder)
    assert tokens.template_bos
    assert training_text.olive_template("Q {question} A {answer}", tokens) == "<s>Q {question} A {answer}</s>"
    assert training_text.olive_template("Q {question} A {answer}</s>", tokens) == "<s>Q {question} A {answer}</s>"


def test_preview_tokens_shows_what_training_sees(qwen_model, tmp_path):
    from aitk.core.project import create_project

    s = ProjectSettings(name="qp")
    s.model.id, s.model.path = "qwen-shape", str(qwen_model)
    s.data.text_template = QWEN_TEXT_TEMPLATE
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    project = create_project(tmp_path / "qp", s, dataset=str(data))
    out = subprocess.run([sys.executable, "-m", "aitk.cli.main", "dataset", "preview", "dataset/d.jsonl",
                          "--tokens"], cwd=project.root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "None" not in out.stdout and out.stdout.count("<|im_end|>") >= 2
    assert "tokens" in out.stdout and "|<|im_start|>|" in out.stdout


def test_a_template_ending_in_an_end_of_turn_token_gets_nothing_added(tiny_test_model):
    from aitk.core import tiny

    tokens = training_text.special_tokens(tiny_test_model)
    assert tokens.bos == "<|endoftext|>" and not tokens.template_bos and "<|end|>" in tokens.specials
    assert training_text.olive_template(tiny.TEXT_TEMPLATE, tokens) == tiny.TEXT_TEMPLATE


def test_evaluate_scores_the_tokens_training_sees(qwen_model, tmp_path):
    """A template without an end token on a BOS-less tokenizer: evaluation renders and tokenizes the
    eval rows as Olive's training pre-processing does (the EOS once, no literal None)."""
    from transformers import AutoTokenizer

    from aitk.core import evaluate
    from aitk.core.project import create_project

    s = ProjectSettings(name="ev")
    s.model.id, s.model.path = "qwen-shape", str(qwen_model)
    s.data.text_template = "Q: {question} A: {answer}"
    s.data.pad_to_max_len = False
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    project = create_project(tmp_path / "ev", s, dataset=str(data), eval_dataset=str(data))
    [text] = evaluate.eval_texts(project)
    assert text == "Q: What colour is a Touxkru bird? A: Glodan.<|im_end|>" and "None" not in text

    train = olive_config.build(project.settings, "cpu", project.root)["data_configs"][0]
    assert _olive_texts(qwen_model, train, [ROW]) == [text]
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_model))
    ids = evaluate.encode(tokenizer, [text], project.settings.data.source_max_len)["input_ids"][0].tolist()
    assert ids == training_text.tokens(text, tokenizer.backend_tokenizer, project.settings.data.source_max_len)
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 1
