"""The model catalog: which models aitk knows, where they come from, and what they need.

Two files, one layout (see `core/data/catalog.toml`):

- the bundled catalog, shipped with aitk (`paths.bundled_data() / "catalog.toml"`);
- an optional user catalog, `paths.config_dir() / "catalog.toml"`. An entry whose `id` is already
  known overrides the fields it sets (a `variants` list replaces the whole list); a new `id` adds a
  model and must be complete. A malformed user file is an `AitkError` naming the file and field.

"Will it fit?" (memory and time estimates per device) is `estimates.py`, which builds on this.
Nothing here touches the network or imports torch.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import paths
from .errors import AitkError

SCHEMA_VERSION = 1
CATALOG_FILE = "catalog.toml"

Runtime = Literal["cpu", "cuda", "directml"]
RUNTIMES: tuple[str, ...] = ("cpu", "cuda", "directml")
Method = Literal["inference", "lora", "qlora"]
METHODS: tuple[str, ...] = ("inference", "lora", "qlora")
Device = Literal["cpu", "cuda", "directml"]

ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$")

# Files a fine-tuning pull fetches: config, safetensors weights, tokenizer, remote code, template.
FINETUNE_ALLOW = ["*.json", "*.safetensors", "*.model", "tokenizer*", "*.txt", "*.py", "*.jinja", "*.tiktoken"]
FINETUNE_IGNORE = ["*.pth", "*.bin", "*.gguf", "*.onnx", "*.onnx.data", "onnx/*"]

GiB = 1024**3
MiB = 1024**2


def _check_source(v: str) -> str:
    if not (v.startswith("https://") or v.startswith("builtin:")):
        raise ValueError("must be an https:// URL (the page the facts come from) or `builtin:<module>`")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    """One way to run the model with ONNX Runtime GenAI on one runtime."""

    runtime: Runtime = Field(description="Where it runs: cpu, cuda or directml.")
    precision: Literal["int4", "int8", "fp16", "fp32"] = Field(description="Weight precision.")
    repo: str | None = Field(None, description="Hugging Face repo of a published build; none: built locally.")
    subfolder: str | None = Field(None, description="Folder of the build inside `repo` (only it is downloaded).")
    download_bytes: int | None = Field(None, ge=0, description="Approximate size of a pull.")
    source: str = Field(description="Where these facts come from (https URL or builtin:).")
    notes: str = ""

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _check_source(v)

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str | None) -> str | None:
        if v is not None and not REPO_RE.match(v):
            raise ValueError(f"{v!r} is not a Hugging Face repo id (owner/name)")
        return v

    @field_validator("subfolder")
    @classmethod
    def _subfolder(cls, v: str | None) -> str | None:
        if v is not None:
            v = v.strip("/")
            if not v or ".." in v.split("/"):
                raise ValueError("must be a relative folder inside the repo")
        return v

    @model_validator(mode="after")
    def _subfolder_needs_repo(self):
        if self.subfolder and not self.repo:
            raise ValueError("`subfolder` is set but `repo` is not")
        return self

    @property
    def key(self) -> str:
        return f"{self.runtime}-{self.precision}"

    @property
    def published(self) -> bool:
        """True when a ready build is downloaded; False when aitk builds it from the weights."""
        return self.repo is not None

    @property
    def allow_patterns(self) -> list[str] | None:
        return [f"{self.subfolder}/*"] if self.subfolder else None

    @property
    def label(self) -> str:
        where = f"{self.repo}/{self.subfolder}" if self.subfolder else (self.repo or "built locally")
        return f"{self.runtime} {self.precision} ({where})"


class CatalogEntry(_Strict):
    """A model aitk can fine-tune, with its inference variants."""

    id: str = Field(description="Short id used on the command line (lowercase, digits, . _ -).")
    name: str
    publisher: str
    description: str = ""
    repo: str | None = Field(None, description="Hugging Face repo of the fine-tuning weights.")
    source: str = Field(description="Where these facts come from (https URL or builtin:).")
    local: bool = Field(False, description="Built on this machine, never downloaded (the tiny model).")
    architecture: str = Field(description="transformers architecture class, e.g. Phi3ForCausalLM.")
    params: int = Field(gt=0, description="Parameter count.")
    license: str
    license_url: str | None = None
    gated: bool = Field(description="Hugging Face asks users to accept terms before downloading.")
    context_length: int = Field(gt=0)
    chat_template: str = Field(description="Prompt format family: phi3, phi4, chatml, llama3, mistral, zephyr, or "
                               "plain (a base model without a chat template).")
    lora_targets: list[str] = Field(min_length=1, description="Suggested LoRA target modules.")
    tasks: list[str] = Field(default_factory=lambda: ["chat"])
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_embeddings: bool = False
    weights_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    download_bytes: int | None = Field(None, ge=0, description="Approximate size of the fine-tuning weights.")
    finetune_allow: list[str] | None = Field(None, description="Patterns a fine-tuning pull fetches.")
    finetune_ignore: list[str] | None = Field(None, description="Extra patterns a fine-tuning pull skips.")
    variants: list[Variant] = Field(default_factory=list)
    origin: Literal["bundled", "user", "override"] = Field("bundled", description="Set by the loader.")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _check_source(v)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError(f"{v!r} is not a usable id: lowercase letters, digits, '.', '_', '-' (max 64)")
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str | None) -> str | None:
        if v is not None and not REPO_RE.match(v):
            raise ValueError(f"{v!r} is not a Hugging Face repo id (owner/name)")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if not self.local and not self.repo:
            raise ValueError("`repo` is required (only `local = true` models have none)")
        if self.num_kv_heads > self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        keys = [v.key for v in self.variants]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"duplicate variants: {', '.join(sorted(dup))}")
        return self

    # -- convenience ------------------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def params_label(self) -> str:
        return human_params(self.params)

    def variants_for(self, runtime: str) -> list[Variant]:
        runtime = normalize_runtime(runtime)
        return [v for v in self.variants if v.runtime == runtime]

    def variant(self, key: str) -> Variant:
        """A variant by runtime (`cpu`: the first, preferred one) or by `runtime-precision`."""
        key = key.lower()
        for v in self.variants:
            if v.key == key:
                return v
        try:
            found = self.variants_for(key)
        except AitkError:
            found = []
        if found:
            return found[0]
        known = ", ".join(v.key for v in self.variants) or "none"
        raise AitkError(f"{self.id} has no variant {key!r}", f"known variants: {known}, or `finetune`")

    def finetune_patterns(self) -> tuple[list[str], list[str]]:
        allow = list(self.finetune_allow or FINETUNE_ALLOW)
        ignore = list(FINETUNE_IGNORE) + list(self.finetune_ignore or [])
        return allow, ignore


class CatalogFile(_Strict):
    """Top level of a catalog file."""

    schema_version: int = SCHEMA_VERSION
    models: list[CatalogEntry] = Field(default_factory=list)

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"this aitk reads schema_version {SCHEMA_VERSION}, the file says {v}")
        return v


def schema() -> dict:
    """JSON Schema of a catalog file (for editors, and checked by the tests)."""
    return CatalogFile.model_json_schema()


def normalize_runtime(value: str) -> str:
    value = value.lower()
    aliases = {"dml": "directml", "gpu": "cuda", "nvidia": "cuda"}
    value = aliases.get(value, value)
    if value not in RUNTIMES:
        raise AitkError(f"unknown runtime {value!r}", f"use one of: {', '.join(RUNTIMES)}")
    return value


def human_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}K"


def human_bytes(n: float | None) -> str:
    """Sizes in binary units (GiB, as memory is counted), the one unit of doctor, wizard and catalog."""
    if n is None:
        return "?"
    for unit, size in (("TiB", 1024**4), ("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# --- Loading ----------------------------------------------------------------------------------------


def bundled_path() -> Path:
    return paths.bundled_data() / CATALOG_FILE


def user_path() -> Path:
    return paths.config_dir() / CATALOG_FILE


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except RecursionError:
        raise AitkError(f"{path}: not valid TOML: nested too deeply", "fix the syntax, or move the file away") from None
    except ValueError as e:  # TOMLDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise AitkError(f"{path}: not valid TOML: {e}", "fix the syntax, or move the file away") from None
    except OSError as e:
        raise AitkError(f"cannot read {path}: {e.strerror or e}") from e


def _where(index: int, raw: Any, loc: Iterable) -> str:
    ident = raw.get("id") if isinstance(raw, dict) else None
    out = f"models[{index}]" + (f" (id {ident!r})" if ident else "")
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _validation_error(path: Path, where: str, err: ValidationError) -> AitkError:
    first = err.errors()[0]
    loc = [p for p in first.get("loc", ()) if p != "__root__"]
    field_name = where
    for part in loc:
        field_name += f"[{part}]" if isinstance(part, int) else f".{part}"
    msg = first.get("msg", "invalid")
    more = len(err.errors()) - 1
    extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return AitkError(
        f"{path}: field `{field_name}`: {msg}{extra}",
        "fix the entry (the bundled catalog shows every field: `aitk catalog show ID --json`)",
    )


def _entries_from(path: Path, data: dict, *, base: dict[str, CatalogEntry] | None) -> list[CatalogEntry]:
    """Validate one file's entries. With `base`, entries may be partial overrides of known ids."""
    unknown = set(data) - {"schema_version", "models"}
    if unknown:
        raise AitkError(f"{path}: unknown top-level key `{sorted(unknown)[0]}`",
                        "a catalog file has `schema_version` and `[[models]]` tables only")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise AitkError(f"{path}: field `schema_version`: this aitk reads {SCHEMA_VERSION}, the file says {version!r}")
    models = data.get("models", [])
    if not isinstance(models, list):
        raise AitkError(f"{path}: field `models` must be a list of tables (write `[[models]]`)")
    out: list[CatalogEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(models):
        if not isinstance(raw, dict):
            raise AitkError(f"{path}: field `models[{i}]` must be a table")
        raw = dict(raw)
        ident = raw.get("id")
        if not isinstance(ident, str):
            raise AitkError(f"{path}: field `{_where(i, raw, ['id'])}` is missing", "every entry needs an `id`")
        if ident in seen:
            raise AitkError(f"{path}: field `{_where(i, raw, ['id'])}`: id {ident!r} appears twice")
        seen.add(ident)
        raw.pop("origin", None)
        if base is not None and ident in base:
            merged = base[ident].model_dump(exclude={"origin"})
            merged.update(raw)
            merged["origin"] = "override"
        else:
            merged = raw
            merged["origin"] = "user" if base is not None else "bundled"
        try:
            out.append(CatalogEntry.model_validate(merged))
        except ValidationError as e:
            raise _validation_error(path, _where(i, raw, []), e) from e
    return out


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]
    user_file: Path | None = None  # the user catalog that was merged in, if any

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    def find(self, key: str) -> CatalogEntry | None:
        """By id, or by Hugging Face repo (fine-tuning or variant repo), case-insensitive."""
        k = key.strip().lower()
        for e in self.entries:
            if e.id == k:
                return e
        for e in self.entries:
            if e.repo and e.repo.lower() == k:
                return e
        for e in self.entries:
            if any(v.repo and v.repo.lower() == k for v in e.variants):
                return e
        return None

    def get(self, key: str) -> CatalogEntry:
        entry = self.find(key)
        if entry is None:
            close = difflib.get_close_matches(key.lower(), self.ids(), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "list the known models with `aitk catalog list`"
            raise AitkError(f"no model {key!r} in the catalog", hint)
        return entry

    def for_repo(self, repo_id: str) -> list[tuple[CatalogEntry, str]]:
        """Entries that use a repo, with what for: `finetune` or a variant key."""
        out = []
        for e in self.entries:
            if e.repo and e.repo.lower() == repo_id.lower():
                out.append((e, "finetune"))
            for v in e.variants:
                if v.repo and v.repo.lower() == repo_id.lower():
                    out.append((e, v.key))
        return out

    def search(self, query: str = "", *, task: str | None = None, runtime: str | None = None,
               where: Callable[[CatalogEntry], bool] | None = None,
               published_only: bool = False) -> list[CatalogEntry]:
        return search(query, task=task, runtime=runtime, where=where, published_only=published_only, catalog=self)


def load(*, user_file: Path | None = None, include_user: bool = True) -> Catalog:
    """The bundled catalog with the user catalog merged in (when present)."""
    bpath = bundled_path()
    entries = _entries_from(bpath, _read_toml(bpath), base=None)
    by_id = {e.id: e for e in entries}
    order = [e.id for e in entries]
    used: Path | None = None
    if include_user:
        upath = user_file or user_path()
        if upath.is_file():
            used = upath
            for e in _entries_from(upath, _read_toml(upath), base=by_id):
                if e.id not in by_id:
                    order.append(e.id)
                by_id[e.id] = e
    return Catalog(tuple(by_id[i] for i in order), used)


def get(key: str) -> CatalogEntry:
    return load().get(key)


def search(query: str = "", *, task: str | None = None, runtime: str | None = None,
           where: Callable[[CatalogEntry], bool] | None = None, published_only: bool = False,
           catalog: Catalog | None = None) -> list[CatalogEntry]:
    """Entries matching every word of `query` (id, name, repo, publisher, licence, tasks, ...).

    Filters: `task` (e.g. chat, code, multilingual), `runtime` (has a variant for it; with
    `published_only`, a downloadable one), `where` (any other test, e.g. "fits this machine" from
    `estimates.fits`). Best matches (words in id or name) come first.
    """
    catalog = catalog or load()
    terms = [t for t in query.lower().split() if t]
    rt = normalize_runtime(runtime) if runtime else None
    scored: list[tuple[int, int, CatalogEntry]] = []
    for pos, e in enumerate(catalog.entries):
        if task and task.lower() not in [t.lower() for t in e.tasks]:
            continue
        if rt:
            vs = e.variants_for(rt)
            if not vs or (published_only and not any(v.published for v in vs)):
                continue
        if where is not None and not where(e):
            continue
        head = f"{e.id} {e.name}".lower()
        hay = " ".join([head, e.publisher, e.repo or "", e.architecture, e.license, e.description,
                        e.chat_template, " ".join(e.tasks), " ".join(v.repo or "" for v in e.variants)]).lower()
        if not all(t in hay for t in terms):
            continue
        score = sum(2 if t in head else 1 for t in terms)
        scored.append((-score, pos, e))
    return [e for _, _, e in sorted(scored, key=lambda x: (x[0], x[1]))]
