"""Two adapters of one project on the same eval prompts: greedy answers and eval loss side by side.

Both adapters load beside each other on one base model (core/chat.py's TorchChatEngine, peft), so
the answers are what training produced, with no export needed; the loss is core/evaluate.py's, on
the texts the fine-tune trained on. Heavy (torch, transformers, peft): a command's work, never
the app's UI thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import AitkError
from .generation import GenerationOptions

MAX_PROMPTS = 16


@dataclass
class Comparison:
    names: tuple[str, str]
    rows: list[dict] = field(default_factory=list)  # {"prompt", "expected", "answers": {name: text}}
    loss: dict[str, float] = field(default_factory=dict)
    eval_rows: int = 0

    def exact(self, name: str) -> int:
        """How many answers equal the eval data's own."""
        return sum(r["answers"][name].strip() == r["expected"].strip() for r in self.rows)

    def perplexity(self, name: str) -> float:
        return math.exp(min(self.loss[name], 50))


def eval_prompts(project, tokenizer, limit: int = MAX_PROMPTS) -> list[tuple[str, str]]:
    """(user message, expected answer) of the eval rows: the prompts the parity check asks
    (core/parity.py), so both commands put the same question to a model."""
    from . import parity, training_text

    special = training_text.special_tokens(project.base_model_path())
    return [(p.user, p.answer) for p in parity.prompts(project, special, tokenizer, limit)]


def compare(project, first: str, second: str, limit: int = MAX_PROMPTS, max_new_tokens: int | None = None,
            device: str = "cpu") -> Comparison:
    from . import adapters
    from .chat import TorchChatEngine
    from .evaluate import eval_texts, mean_loss

    a, b = adapters.get(project.root, first), adapters.get(project.root, second)
    if a.name == b.name:
        raise AitkError(f"{first} and {second} are the same adapter", "name two different adapters")
    from transformers.utils import logging

    logging.disable_progress_bar()  # a command's output, not a download's
    engine = TorchChatEngine(project.base_model_path(), adapters={a.name: a.path, b.name: b.path})
    prompts = eval_prompts(project, engine.tokenizer, limit)
    if device == "cuda":
        engine.model = engine.model.to("cuda")
    options = GenerationOptions(max_new_tokens=max_new_tokens or project.settings.inference.max_new_tokens,
                                temperature=0.0)
    result = Comparison((a.name, b.name))
    for prompt, expected in prompts:
        messages = [{"role": "user", "content": prompt}]
        answers = {n: engine.stream(messages, options, adapter=n).read().strip() for n in result.names}
        result.rows.append({"prompt": prompt, "expected": expected, "answers": answers})
    texts = eval_texts(project)
    tokenizer = engine.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for n in result.names:
        engine.model.set_adapter(n)
        result.loss[n] = round(mean_loss(engine.model, tokenizer, texts, project.settings.data.source_max_len)[0], 4)
    result.eval_rows = len(texts)
    return result
