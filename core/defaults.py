"""Default project settings per model and device: the chat format of the model's family, and
fine-tuning defaults that suit it on this machine (read from the catalog)."""

from __future__ import annotations

from . import catalog, tiny
from .errors import AitkError
from .settings import FinetuneSettings, ModelSettings, ProjectSettings

# Chat formats by catalog `chat_template` family: (training text template over the bundled
# question/answer columns, inference prompt template).
TEMPLATES = {
    "phi3": (tiny.TEXT_TEMPLATE, tiny.PROMPT_TEMPLATE),
    "phi4": (tiny.TEXT_TEMPLATE, tiny.PROMPT_TEMPLATE),
    "chatml": ("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>",
               "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"),
    "llama3": ("<|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n{answer}<|eot_id|>",
               "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "mistral": ("[INST] {question} [/INST] {answer}</s>", "[INST] {} [/INST]"),
    "zephyr": ("<|user|>\n{question}</s>\n<|assistant|>\n{answer}</s>", "<|user|>\n{}</s>\n<|assistant|>\n"),
    # Base models without a chat template: AI Toolkit's templates prompt them with `###` headings.
    "plain": ("### Question: {question}\n### Answer: {answer}", "### Question: {}\n### Answer:"),
}


def _own_facts(model_id: str) -> tuple[list[str], tuple[str, str] | None] | None:
    """A model outside the catalog: (LoRA targets, chat templates) from its own files on disk."""
    from .model_files import chat_templates, local_dir, target_modules

    folder = local_dir(model_id)
    return None if folder is None else (target_modules(folder), chat_templates(folder))


def default_settings(name: str, model_id: str = tiny.TINY_ID, device: str = "cpu") -> ProjectSettings:
    """Defaults per model and device.

    The tiny model gets what was measured to learn the bundled facts in ~20 s on 2 cores. Real
    models get AI Toolkit's Phi-3 defaults, adjusted to the device (bfloat16 + QLoRA on CUDA,
    LoRA in float32 on CPU).
    """
    settings = ProjectSettings(name=name)
    if model_id == tiny.TINY_ID:
        return settings
    try:
        entry = catalog.load().get(model_id)
    except AitkError:
        if "/" not in model_id:
            raise
        entry = None  # a Hugging Face repo id that is not in the catalog: taken as it is
    settings.model = ModelSettings(id=model_id, path=entry.repo if entry and entry.repo else model_id)
    own = None if entry else _own_facts(model_id)
    if own and own[1]:
        settings.data.text_template, settings.inference.prompt_template = own[1]
    else:
        family = entry.chat_template if entry else "phi3"
        settings.data.text_template = TEMPLATES.get(family, TEMPLATES["phi3"])[0]
        settings.inference.prompt_template = TEMPLATES.get(family, TEMPLATES["phi3"])[1]
    cuda = device == "cuda"
    settings.finetune = FinetuneSettings(
        method="qlora" if cuda else "lora",
        compute_dtype="bfloat16" if cuda else "float32",
        lora_r=64, lora_alpha=64.0, lora_dropout=0.1,
        target_modules=list(entry.lora_targets) if entry else (own[0] if own else []),
        per_device_train_batch_size=1, per_device_eval_batch_size=1,
        gradient_accumulation_steps=4, gradient_checkpointing=True,
        learning_rate=1e-4, num_train_epochs=3.0, max_steps=1200,
        logging_steps=10, eval_steps=100, save_steps=100,
    )
    settings.data.source_max_len = min(1024, entry.context_length) if entry else 1024
    settings.inference.precision = "fp16" if device in ("cuda", "dml") else "int4"
    return settings
