"""Evaluate job: loss and perplexity of the base and the tuned model on the eval split.

Runs in a job process (torch, transformers, peft). The same texts the fine-tune trained on are
scored once without and once with the adapter on one loaded model, so the two numbers are
directly comparable. "The same" means token for token: the template with the special tokens
training adds (core/training_text.py: no literal None, one end token), tokenized without the
tokenizer's own special tokens and cut at the sample length, as Olive does.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .errors import AitkError
from .project import Project

RESULT_FILE = "result.json"


def eval_rows(project: Project) -> list[dict]:
    """The eval split's rows (the training data's when the project has no eval data); the loss
    and the parity check (core/parity.py) both ask these."""
    from . import datasets
    from .datasets import is_file_source

    d = project.settings.data
    source = d.eval_dataset or d.dataset
    path = str(project.path(source)) if is_file_source(source) else source
    rows = datasets.load_rows(path, split=d.eval_split if d.eval_dataset else d.train_split).rows
    if not rows:
        raise AitkError(f"the eval data {source} has no rows", "add rows or set eval_dataset in aitk.toml")
    return rows


def eval_texts(project: Project) -> list[str]:
    """The eval rows rendered exactly as training renders a row."""
    from . import training_text

    tokens = training_text.special_tokens(project.base_model_path())
    return [training_text.training_text(project.settings.data.text_template, r, tokens) for r in eval_rows(project)]


def encode(tokenizer, texts: list[str], max_len: int):
    """A padded batch of `texts` with the ids training sees (no BOS/EOS added by the tokenizer:
    the text carries the ones training has)."""
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_len,
                     add_special_tokens=False)


def mean_loss(model, tokenizer, texts: list[str], max_len: int, batch_size: int = 8) -> tuple[float, int]:
    """Token-weighted mean next-token loss over all texts."""
    import torch

    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = encode(tokenizer, texts[i:i + batch_size], max_len)
            labels = batch["input_ids"].clone()
            labels[batch["attention_mask"] == 0] = -100
            logits = model(**batch).logits[:, :-1]
            target = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                                                     target.reshape(-1), ignore_index=-100, reduction="sum")
            total += loss.item()
            tokens += int((target != -100).sum())
    return total / max(tokens, 1), tokens


def run_evaluate(project: Project, job_dir: Path, device: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = eval_texts(project)
    tok = AutoTokenizer.from_pretrained(project.base_model_path())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(project.base_model_path())
    if device == "cuda":
        model = model.to("cuda")
    model.eval()
    max_len = project.settings.data.source_max_len
    t0 = time.time()
    result = {"rows": len(texts)}
    base_loss, n_tokens = mean_loss(model, tok, texts, max_len)
    result["base"] = {"loss": round(base_loss, 4), "perplexity": round(math.exp(min(base_loss, 50)), 3)}
    print(f"[aitk] base:  loss {base_loss:.4f}  perplexity {math.exp(min(base_loss, 50)):.2f}", flush=True)
    from .publish import current_adapter

    adapter = current_adapter(project)
    if adapter is not None:
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(model, str(adapter)).eval()
        tuned_loss, _ = mean_loss(tuned, tok, texts, max_len)
        result["tuned"] = {"loss": round(tuned_loss, 4), "perplexity": round(math.exp(min(tuned_loss, 50)), 3)}
        print(f"[aitk] tuned: loss {tuned_loss:.4f}  perplexity {math.exp(min(tuned_loss, 50)):.2f}", flush=True)
    else:
        print("[aitk] no adapter yet: base model only", flush=True)
    result.update(tokens=n_tokens, seconds=round(time.time() - t0, 2), device=device,
                  torch=torch.__version__)
    (job_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result
