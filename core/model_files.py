"""What a base model's own files say, read from disk only (a model folder or the HF cache): where
it is, which layers LoRA should target, its chat format; and whether `model.id` and `model.path`
name the same model. Nothing here touches the network or imports torch."""

from __future__ import annotations

import json
from pathlib import Path

from . import catalog as cat
from .errors import AitkError

# LoRA targets per transformers `model_type`: every linear layer of attention and MLP (what
# learns on small data; peft's defaults are attention only).
TARGETS_BY_TYPE = {
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_SENTINELS = ("\x00question\x00", "\x00answer\x00")


def local_dir(path: str, root: Path | None = None) -> Path | None:
    """The folder holding the model `path` names: a folder (relative to `root`), or the snapshot
    of a hub id in the HF cache (the `main` ref, else the newest with a config.json); None if absent."""
    from .hub import repo_folder

    folder = Path(path).expanduser()
    if not folder.is_absolute() and root is not None:
        folder = root / folder
    if folder.is_dir():
        return folder
    if not cat.REPO_RE.match(path):
        return None
    repo = repo_folder(path)
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if (snap / "config.json").is_file():
            return snap
    snaps = sorted((repo / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return snaps[-1].parent if snaps else None


def has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        next(folder.glob(pattern), None) for pattern in ("*.safetensors", "*.bin"))


def read_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def target_modules(folder: Path) -> list[str]:
    """LoRA targets from the model's config.json; [] (peft's defaults) for an unknown architecture."""
    model_type = str(read_config(folder).get("model_type", ""))
    if model_type in TARGETS_BY_TYPE:
        return list(TARGETS_BY_TYPE[model_type])
    if model_type in {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "granite", "olmo"}:
        return list(LLAMA_LIKE)
    return []


def _special(config: dict, name: str) -> str:
    value = config.get(name)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def chat_templates(folder: Path) -> tuple[str, str] | None:
    """(training text template over `question`/`answer`, inference prompt template with `{}`)
    rendered from the model's own Jinja chat template; None when it has none."""
    from .datasets import _compile_chat_template, load_chat_template

    try:
        template = _compile_chat_template(load_chat_template(folder))
        tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (AitkError, OSError, ValueError):
        return None
    tok = tok if isinstance(tok, dict) else {}
    specials = {"bos_token": _special(tok, "bos_token"), "eos_token": _special(tok, "eos_token")}
    q, a = _SENTINELS
    try:
        exchange = template.render(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                   add_generation_prompt=False, **specials)
        prompt = template.render(messages=[{"role": "user", "content": q}], add_generation_prompt=True, **specials)
    except Exception:  # a template that needs more than messages and special tokens
        return None
    if q not in exchange or a not in exchange or q not in prompt:
        return None
    bos = specials["bos_token"]
    # Olive adds bos itself; the exchange's leading bos would be doubled.
    exchange = exchange[len(bos):] if bos and exchange.startswith(bos) else exchange
    prompt = prompt[len(bos):] if bos and prompt.startswith(bos) else prompt
    text = exchange.replace("{", "{{").replace("}", "}}").replace(q, "{question}").replace(a, "{answer}")
    return text, prompt.replace(q, "{}")


def check_model_consistency(model, root: Path | None = None) -> None:
    """Refuse `model.id` and `model.path` that name different models (training one, showing and
    estimating the other). `model` is a settings.ModelSettings."""
    entry = cat.load().find(model.id)
    path = model.path
    folder = Path(path).expanduser()
    if not folder.is_absolute() and root is not None:
        folder = root / folder
    is_folder = folder.is_dir()
    hint = "set both together, e.g. `aitk project set model.id=ID model.path=PATH`"
    if not is_folder and cat.REPO_RE.match(path):
        if entry is not None and entry.local:
            raise AitkError(f"model.id {model.id!r} is built on this machine but model.path {path!r} is a "
                            "Hugging Face repo", hint)
        wanted = entry.repo if entry is not None else (model.id if "/" in model.id else None)
        if wanted and wanted.lower() != path.lower():
            raise AitkError(f"model.id {model.id!r} is {wanted} but model.path is {path!r}", hint)
        return
    if is_folder and entry is not None:
        archs = read_config(folder).get("architectures") or []
        if archs and entry.architecture not in archs:
            raise AitkError(f"model.path {path} holds a {archs[0]} but model.id {model.id!r} is a "
                            f"{entry.architecture}", hint)


def require_local(model, root: Path) -> None:
    """Refuse a local job whose base model is not on this machine and cannot be fetched by it,
    naming the model and what to do, before the job is queued (not a ConnectError in the job)."""
    import difflib

    from . import hub

    path = model.path
    folder = local_dir(path, root)
    if folder is not None:
        if not has_weights(folder):
            raise AitkError(f"base model folder {folder} has no weights (config.json + *.safetensors)",
                            "point model.path at a complete model folder, or pull it: "
                            f"`aitk model pull {model.id}`")
        return
    if not cat.REPO_RE.match(path):
        raise AitkError(f"base model folder {root / path} is not there",
                        "download it there, or set model.path to a Hugging Face repo id "
                        "(`aitk project set model.path=OWNER/NAME`)")
    catalog = cat.load()
    entry = catalog.find(path) or catalog.find(model.id)
    name = f"{entry.id} ({path})" if entry else path
    if entry is None:
        known = {e.repo: e.id for e in catalog if e.repo}
        near = difflib.get_close_matches(path, list(known), n=1, cutoff=0.85)
        if near:
            raise AitkError(f"base model {path} is not on this machine and not in the catalog: "
                            f"did you mean {near[0]} ({known[near[0]]})?",
                            f"`aitk project set model.id={known[near[0]]} model.path={near[0]}`, or if {path} "
                            f"is right, `aitk model pull {path}` first")
    pull = f"`aitk model pull {entry.id if entry else path}`"
    gated = entry is not None and entry.gated and hub.hf_token() is None
    if gated:
        where = entry.license_url or f"https://huggingface.co/{path}"
        raise AitkError(f"base model {name} is gated and not on this machine, and no Hugging Face token is set",
                        f"accept its licence at {where}, set HF_TOKEN (or `hf auth login`; token page "
                        f"{hub.TOKEN_URL}), then {pull}")
    if hub.is_offline():
        raise AitkError(f"base model {name} is not on this machine and Hugging Face is in offline mode "
                        "(HF_HUB_OFFLINE)", f"{pull} while online (unset HF_HUB_OFFLINE), or point "
                        "model.path at a local model folder")
