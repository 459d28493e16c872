"""The exact text (and tokens) training sees for a row: the text template plus the model's own
special tokens, decided from its tokenizer and chat template.

Olive's text-generation data component (olive/data/component/text_generation.py, `get_text`)
with its default `add_special_tokens=True` renders a row as f"{bos_token} {text} {eos_token}":
for a tokenizer without a BOS token (Qwen2.5: `bos_token: null`) that is a literal "None ", and
since aitk's text templates already end with the chat format's end-of-turn token, the end token
is doubled (and both are glued on with spaces the chat format never has). So aitk always writes
`add_special_tokens: false` and puts the tokens the model's chat format uses into the template
it gives Olive:
- BOS in front only when the model's chat template itself starts a conversation with it;
- the EOS token at the end only when the template does not already end with a special token
  (an end-of-turn such as `<|im_end|>` or `<|end|>`), so a sample ends exactly once.
Olive then tokenizes that text with `add_special_tokens=False`, which `tokens` reproduces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import text_template


@dataclass(frozen=True)
class SpecialTokens:
    bos: str | None = None
    eos: str | None = None
    template_bos: bool = False  # the chat template starts a conversation with `bos`
    specials: tuple[str, ...] = field(default_factory=tuple)  # every special token the tokenizer knows


def _token(value) -> str | None:
    if isinstance(value, dict):  # {"content": "<s>", ...} in older tokenizer configs
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def model_folder(model: str | Path) -> Path | None:
    """A local folder holding the model's tokenizer files: the folder itself, or a hub id's
    snapshot in the HF cache (read offline; None when it is not there)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if "/" not in str(model):
        return None
    from .hub import repo_folder

    snapshots = sorted((repo_folder(str(model)) / "snapshots").glob("*/tokenizer_config.json"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
    return snapshots[0].parent if snapshots else None


def special_tokens(model: str | Path | None) -> SpecialTokens:
    """BOS/EOS and whether the chat template uses BOS, from the model's tokenizer files (empty
    when they cannot be read: then nothing is added, which never renders a literal None)."""
    folder = model_folder(model) if model else None
    if folder is None:
        return SpecialTokens()
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return SpecialTokens()
    if not isinstance(config, dict):
        return SpecialTokens()
    bos, eos = _token(config.get("bos_token")), _token(config.get("eos_token"))
    specials = {t for t in (bos, eos) if t}
    added = list((config.get("added_tokens_decoder") or {}).values())
    try:  # transformers 5 keeps the added tokens in tokenizer.json only
        added += json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens") or []
    except (OSError, ValueError, AttributeError):
        pass
    for entry in added:
        if isinstance(entry, dict) and entry.get("special") and _token(entry):
            specials.add(_token(entry))
    template_bos = False
    if bos:
        from . import datasets
        from .errors import AitkError

        try:
            rendered = datasets.render_chat({"u": "x", "a": "y"}, datasets.load_chat_template(folder), "u", "a",
                                            bos_token=bos, eos_token=eos or "")
            template_bos = rendered.lstrip().startswith(bos)
        except AitkError:
            template_bos = False
    return SpecialTokens(bos, eos, template_bos, tuple(sorted(specials)))


def olive_template(template: str, tokens: SpecialTokens) -> str:
    """The text template to give Olive (with `add_special_tokens: false`): `template` with the
    model's BOS in front and EOS at the end where its chat format needs them (module docstring)."""
    out = template
    if tokens.bos and tokens.template_bos and not template.startswith(tokens.bos):
        out = tokens.bos.replace("{", "{{").replace("}", "}}") + out
    stripped = template.rstrip()
    if tokens.eos and not any(stripped.endswith(t) for t in tokens.specials):
        out += tokens.eos.replace("{", "{{").replace("}", "}}")
    return out


def training_text(template: str, row: dict, tokens: SpecialTokens) -> str:
    """One row exactly as Olive renders it from the config aitk writes."""
    return text_template.render(olive_template(template, tokens), row)


def tokens(text: str, tokenizer, max_len: int | None = None) -> list[int]:
    """The token ids training sees for `text` (a `tokenizers.Tokenizer`): Olive tokenizes with
    add_special_tokens=False and, line by line, cuts at the sample length."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return ids[:max_len] if max_len else ids


@dataclass(frozen=True)
class TokenPreview:
    text: str  # the sample as Olive renders it
    ids: list[int]  # what training sees (cut at the sample length)
    decoded: str  # those ids decoded back, special tokens kept
    pieces: list[str]  # each token on its own


def preview_tokens(project, source: str, n: int = 5, split: str = "train") -> list[TokenPreview]:
    """The first `n` rows of `source` as the project's training sees them, token by token, with
    its model's tokenizer (the model must be a local folder or in the HF cache)."""
    from . import datasets
    from .errors import AitkError

    s = project.settings
    folder = model_folder(project.base_model_path())
    if folder is None or not (folder / "tokenizer.json").is_file():
        raise AitkError(f"the tokenizer of {s.model.id} is not on this machine",
                        f"`aitk model pull {s.model.id}` first (tokens need the model's own tokenizer)")
    special = special_tokens(folder)
    tokenizer = datasets.load_tokenizer(folder)
    text_template.check(s.data.text_template)
    out = []
    for row in datasets.load_rows(source, split, max_rows=n).rows:
        text = training_text(s.data.text_template, row, special)
        ids = tokens(text, tokenizer, s.data.source_max_len)
        out.append(TokenPreview(text, ids, tokenizer.decode(ids, skip_special_tokens=False),
                                [tokenizer.decode([i], skip_special_tokens=False) for i in ids]))
    return out
