"""The embedded default model: a tiny, randomly initialised Phi-3 built offline.

It is a real `Phi3ForCausalLM` with a byte-level BPE tokenizer trained here on the bundled
dataset and Phi-3's chat template, saved as an ordinary Hugging Face folder. Olive, peft,
transformers and the onnxruntime-genai model builder take it like any hub checkpoint, so the
whole pipeline (fine-tune, export, chat) runs on a 2-core machine with no download.

Deterministic: the same spec gives byte-identical weights and tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from . import paths

TINY_ID = "tiny"
MARKER = "aitk-tiny.json"

SPECIAL_TOKENS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]

# Phi-3's own chat template (tokenizer_config.json of microsoft/Phi-3-mini-4k-instruct, simplified
# to the roles it knows), so prompts render exactly as on the real model.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# The same format as a plain text template over the bundled dataset's columns.
TEXT_TEMPLATE = "<|user|>\n{question}<|end|>\n<|assistant|>\n{answer}<|end|>"
PROMPT_TEMPLATE = "<|user|>\n{}<|end|>\n<|assistant|>\n"


@dataclass(frozen=True)
class TinySpec:
    """Shape of the tiny model. `demo` is the default; `test` is smaller for the test suite."""

    name: str = TINY_ID
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 256
    context_length: int = 512
    # Large enough that BPE learns every word of the bundled dataset as one token, so a fact is
    # one subject token -> one answer token: learnable by LoRA in seconds.
    vocab_size: int = 2048
    # Far above HF's 0.02: a random model's features are otherwise too flat for LoRA to use.
    initializer_range: float = 0.2
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


DEMO = TinySpec()
TEST = TinySpec(name="tiny-test", hidden_size=64, intermediate_size=128, num_attention_heads=4)


def tokenizer_corpus() -> list[str]:
    """Text the tokenizer learns its merges from: the bundled dataset in chat form."""
    lines: list[str] = []
    for split in ("train.jsonl", "eval.jsonl"):
        with open(paths.bundled_data() / "tiny_qa" / split, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                lines.append(TEXT_TEMPLATE.format(**row))
    return lines


def _train_tokenizer(spec: TinySpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return tok


def build_tokenizer(spec: TinySpec = DEMO, context_length: int | None = None):
    """The tiny model's tokenizer (Phi-3 chat template) and its special-token ids.

    Shared with `shapes`, whose real-shape models use it too. Returns (tokenizer, ids by token).
    """
    from transformers import PreTrainedTokenizerFast

    raw = _train_tokenizer(spec)
    ids = {t: raw.token_to_id(t) for t in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=context_length or spec.context_length,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer, ids


def _write_model(spec: TinySpec, dest: Path) -> None:
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars would clutter CLI output

    tokenizer, ids = build_tokenizer(spec)
    tokenizer.save_pretrained(dest)

    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.context_length,
        original_max_position_embeddings=spec.context_length,
        # Defaults are Phi-3-mini's ids (32000...), which do not exist in our vocabulary.
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
        initializer_range=spec.initializer_range,
    )
    torch.manual_seed(spec.seed)
    model = Phi3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(dest)
    (dest / MARKER).write_text(json.dumps({"spec": asdict(spec), "digest": spec.digest()}, indent=2))


def model_dir(spec: TinySpec = DEMO) -> Path:
    return paths.models_dir() / spec.name


def is_built(spec: TinySpec = DEMO, dest: Path | None = None) -> bool:
    marker = (dest or model_dir(spec)) / MARKER
    try:
        return json.loads(marker.read_text())["digest"] == spec.digest()
    except (OSError, ValueError, KeyError):
        return False


def ensure_tiny(spec: TinySpec = DEMO, dest: Path | None = None, *, rebuild: bool = False) -> Path:
    """Return the tiny model folder, building it first if missing or stale.

    Built into a temporary sibling and renamed into place, so a crash never leaves half a model.
    """
    dest = dest or model_dir(spec)
    if not rebuild and is_built(spec, dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _write_model(spec, tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
