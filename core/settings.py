"""Project settings: one typed, validated model for every field a fine-tuning project has.

Covers AI Toolkit's "Configure Project" form field for field (data, fine-tune, inference) and
adds what it lacks: an eval split that is really wired, the fine-tuning method (LoRA / QLoRA),
target modules, and the target (this machine's device or Azure). Every field carries help text
and bounds, which the CLI, the wizard and the TOML file all share.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import generation, text_template, tiny

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    id: str = Field(tiny.TINY_ID, description="Catalog id of the base model (`tiny` is the embedded model).")
    path: str = Field(
        "model",
        description="Where the base model is: a folder relative to the project, an absolute folder, or a "
        "Hugging Face repo id.",
    )


class DataSettings(_Section):
    dataset: str = Field("dataset/train.jsonl", description="Training data: a JSON/JSONL/CSV/Parquet file "
                         "relative to the project, or a Hugging Face dataset name.")
    train_split: str = Field("train", description="Split to train on (for local files the whole file is `train`).")
    eval_dataset: str | None = Field("dataset/eval.jsonl", description="Evaluation data, same forms as "
                                     "`dataset`; empty for none.")
    eval_split: str = Field("train", description="Split of the evaluation data to use.")
    dataset_type: Literal["corpus"] = Field("corpus", description="How rows become training text.")
    text_columns: list[str] = Field(default_factory=lambda: ["question", "answer"],
                                    description="Columns the template reads.")
    text_template: str = Field(tiny.TEXT_TEMPLATE, description="Training text per row; `{column}` is replaced.")
    corpus_strategy: Literal["line-by-line", "join"] = Field(
        "line-by-line", description="`line-by-line`: one row per sample (best for short Q/A). `join`: rows "
        "packed into max-length blocks (for long documents).")
    source_max_len: int = Field(128, ge=16, le=131072, description="Tokens per sample; longer rows are cut.")
    pad_to_max_len: bool = Field(False, description="Pad every sample to max length (slower; rarely needed).")

    @field_validator("eval_dataset", mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        # TOML has no null: "no eval data" is stored as "" (leaving the key out would mean the default).
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("text_template")
    @classmethod
    def _template_in_grammar(cls, v: str) -> str:
        # The one check of the template grammar: what passes here renders in Olive as in the preview.
        from .errors import AitkError

        try:
            return text_template.check(v)
        except AitkError as e:
            raise ValueError(f"{e.message} ({e.hint})" if e.hint else e.message) from None


# Training arguments aitk writes itself (from the setting named, or always): never passed twice.
MODELED_TRAINING_ARGS = {
    **{k: f"finetune.{k}" for k in (
        "seed", "data_seed", "per_device_train_batch_size", "per_device_eval_batch_size",
        "gradient_accumulation_steps", "gradient_checkpointing", "learning_rate", "lr_scheduler_type",
        "num_train_epochs", "max_steps", "logging_steps", "eval_steps", "save_steps")},
    "output_dir": "finetune.checkpoint_dir",
    "save_total_limit": "aitk's own value (2)", "report_to": "aitk's own value", "optim": "aitk's own value",
    "resume_from_checkpoint": "`aitk jobs resume`",
}


class FinetuneSettings(_Section):
    method: Literal["lora", "qlora"] = Field("lora", description="LoRA trains adapters on the full-precision "
                                             "model; QLoRA on a 4-bit quantized one (less memory, slower).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "float32", description="Precision of training math. bfloat16 on recent GPUs, float32 on CPU.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="QLoRA 4-bit format.")
    double_quant: bool = Field(True, description="QLoRA: quantize the quantization constants too.")
    lora_r: int = Field(64, ge=1, le=1024, description="Adapter rank: capacity of the update.")
    lora_alpha: float = Field(128.0, gt=0, le=4096, description="Adapter scale; alpha/r multiplies the update.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on adapter inputs.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        description="Layers that get adapters. Empty: Olive/peft defaults for the architecture.")
    seed: int = Field(0, ge=0, description="Seed for initialisation and training.")
    data_seed: int = Field(42, ge=0, description="Seed for data order.")
    per_device_train_batch_size: int = Field(16, ge=1, le=1024, description="Samples per step per device.")
    per_device_eval_batch_size: int = Field(8, ge=1, le=1024, description="Samples per eval step per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Steps whose gradients add up "
                                             "before one optimizer update.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory, ~30% slower.")
    learning_rate: float = Field(2e-3, gt=0, le=1, description="Initial learning rate of AdamW.")
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = Field("constant", description="Schedule.")
    num_train_epochs: float = Field(3.0, gt=0, le=1000, description="Epochs; `max_steps` wins when set.")
    max_steps: int = Field(600, ge=-1, description="Optimizer steps to run; -1 to use epochs.")
    logging_steps: int = Field(10, ge=1, description="Log loss every N steps.")
    eval_steps: int = Field(200, ge=1, description="Evaluate on the eval data every N steps.")
    save_steps: int = Field(200, ge=1, description="Save a resumable checkpoint every N steps.")
    checkpoint_dir: str = Field("models/checkpoints", description="Where checkpoints go, relative to the project.")
    loftq: bool = Field(False, description="Initialise QLoRA adapters with LoftQ (needs CUDA).")
    extra_training_args: dict[str, str | bool | int | float] = Field(
        default_factory=dict, description="More Hugging Face TrainingArguments passed to Olive as they are "
        "(e.g. {max_grad_norm = 0.3}); for what the fields above do not cover.")

    @field_validator("extra_training_args")
    @classmethod
    def _extra_args(cls, v: dict) -> dict:
        # A key the settings model (or aitk itself sets) would be applied twice, one silently losing.
        for key in v:
            if not key.isidentifier():
                raise ValueError(f"{key!r} is not a training argument name")
            if key in MODELED_TRAINING_ARGS:
                raise ValueError(f"{key!r} is set by its own setting or by aitk: "
                                 f"use {MODELED_TRAINING_ARGS[key]} instead")
        return v

    @field_validator("checkpoint_dir")
    @classmethod
    def _inside_project(cls, v: str) -> str:
        # Olive deletes old checkpoints there (save_total_limit): never a folder outside the project.
        parts = v.replace("\\", "/").split("/")
        if not v.strip() or v.startswith(("/", "\\", "~")) or (len(v) > 1 and v[1] == ":"):
            raise ValueError(f"{v!r} must be a folder relative to the project, e.g. models/checkpoints")
        if ".." in parts:
            raise ValueError(f"{v!r} leaves the project folder (`..`): use a folder inside it")
        return v

    @model_validator(mode="after")
    def _steps(self):
        if self.max_steps == 0:
            raise ValueError("max_steps must be positive, or -1 to train for num_train_epochs")
        if self.loftq and self.method != "qlora":
            raise ValueError("loftq applies to method `qlora` only")
        return self


def _gen_field(name: str):
    lo, hi = generation.BOUNDS[name]
    return Field(generation.DEFAULTS[name], ge=lo, le=hi, description=generation.HELP[name])


class InferenceSettings(_Section):
    prompt_template: str = Field(tiny.PROMPT_TEMPLATE, description="How a user prompt is wrapped when the "
                                 "model has no chat template; `{}` is the prompt.")
    # Defaults and bounds are core.generation's, shared by the server, `aitk chat` and the app.
    max_new_tokens: int = _gen_field("max_new_tokens")
    temperature: float = _gen_field("temperature")
    top_p: float = _gen_field("top_p")
    top_k: int = _gen_field("top_k")
    precision: Literal["int4", "fp32", "fp16"] = Field("fp32", description="ONNX export precision: int4 or "
                                                       "fp32 on CPU, fp16 on CUDA/DirectML.")
    merged_export: bool = Field(False, description="Every export also writes the merged form (the adapter "
                                "folded into the weights: tuned chat and serving at the base model's speed).")


class TargetSettings(_Section):
    where: Literal["local", "azure"] = Field("local", description="Train on this machine or on Azure.")
    device: Literal["auto", "cuda", "cpu", "dml"] = Field("auto", description="Local device; `auto` picks "
                                                           "the best present.")


class ProjectSettings(_Section):
    name: str = Field(description="Project name: letters, digits, `.`, `_`, `-`; becomes a folder name.")
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    target: TargetSettings = Field(default_factory=TargetSettings)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not NAME_RE.match(v) or v in {".", ".."}:
            raise ValueError(
                f"{v!r} is not a usable project name: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (no '/', no spaces)"
            )
        return v

    def to_toml_dict(self) -> dict:
        """TOML has no null: an unset optional field is written as "" (read back as None)."""
        data = self.model_dump(mode="json")
        return {k: ({f: ("" if v is None else v) for f, v in sec.items()} if isinstance(sec, dict) else sec)
                for k, sec in data.items()}


def format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {where}: {first['msg']}{more}"


SECTIONS = ("model", "data", "finetune", "inference", "target")


_BOUND_SYMBOLS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
# Multi-line text typed on one line (a shell argument, the wizard's inputs): `\n` and `\t` are
# read as a new line and a tab there. Other text (paths, ids) is taken as typed: `C:\new` stays.
ESCAPED_TEXT = ("data.text_template", "inference.prompt_template")


@dataclass(frozen=True)
class SettingSpec:
    """One setting as front ends show and edit it: `aitk project keys` and the wizard's form."""

    section: str
    name: str
    kind: str  # bool | choice | int | float | text (with escapes) | str | optional_str | list | table
    choices: tuple = ()
    default: object = None
    description: str = ""
    bounds: tuple[tuple[str, object], ...] = ()  # ("ge", 1), ("le", 1024): pydantic's own limits

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def bounds_text(self) -> str:
        return ", ".join(f"{_BOUND_SYMBOLS[op]} {value}" for op, value in self.bounds)

    @property
    def type_text(self) -> str:
        if self.kind == "choice":
            return " | ".join(map(str, self.choices))
        return {"optional_str": "text or empty", "str": "text", "text": "text, \\n a new line",
                "list": "list of text",
                "table": "table, e.g. {max_grad_norm = 0.3}"}.get(self.kind, self.kind)


def _kind(annotation) -> tuple[str, tuple]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return "bool", ()
    if origin is Literal:
        return "choice", args
    if annotation in (int, float):
        return annotation.__name__, ()
    if origin is list:
        return "list", ()
    if origin is dict:
        return "table", ()
    if type(None) in args:
        return "optional_str", ()
    return "str", ()


def setting_specs(sections: typing.Iterable[str] = SECTIONS) -> list[SettingSpec]:
    """Every setting of `sections`, in settings order, read from the pydantic models (one source
    for names, kinds, defaults, bounds and help)."""
    out = []
    for section in sections:
        for name, info in ProjectSettings.model_fields[section].annotation.model_fields.items():
            kind, choices = _kind(info.annotation)
            if f"{section}.{name}" in ESCAPED_TEXT:
                kind = "text"
            bounds = tuple((op, getattr(m, op)) for m in info.metadata for op in _BOUND_SYMBOLS
                           if getattr(m, op, None) is not None)
            out.append(SettingSpec(section, name, kind, choices, info.get_default(call_default_factory=True),
                                   info.description or "", bounds))
    return out


def setting_keys() -> list[str]:
    """Every `section.field` a project has, as `--set` and aitk.toml name them."""
    return [spec.key for spec in setting_specs()]


def changes(before: ProjectSettings, after: ProjectSettings) -> list[tuple[str, object, object]]:
    """(`section.field`, old, new) for every field that differs, in settings order."""
    a, b = before.model_dump(mode="json"), after.model_dump(mode="json")
    return [(f"{section}.{key}", a[section].get(key), value) for section in SECTIONS
            for key, value in b[section].items() if a[section].get(key) != value]


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def escape_text(text: str) -> str:
    """One-line form of a text (a shell argument, a one-line input): `\\n` for a new line, `\\t`
    for a tab, `\\\\` for a backslash. `unescape_text` reverses it."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def unescape_text(text: str) -> str:
    """How a typed text field is read, on the command line and in the wizard alike: `\\n` is a
    new line, `\\t` a tab, `\\\\` one backslash; any other backslash stays as typed."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _parse_value(raw: str, annotation, escapes: bool = False) -> object:
    """A TOML literal when it is one (`2e-4`, `true`, `["q", "a"]`, `"a\\nb"`), else the text
    itself (through `unescape_text` when `escapes`); text fields keep `true` or `12` as text; a
    comma list for list fields (`q,a`), and nothing for an empty optional field."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    textual = origin not in (list, dict) and (annotation is str or str in args or origin is Literal)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
        if not textual or isinstance(value, str):
            return value
    except (ValueError, RecursionError):  # not TOML (TOMLDecodeError), 5000 digits, 5000 nested arrays
        pass
    if raw == "" and type(None) in args:
        return None
    if typing.get_origin(annotation) is list:
        return [part.strip() for part in raw.split(",") if part.strip()]
    return unescape_text(raw) if escapes else raw


def apply_overrides(settings: ProjectSettings, assignments: list[str], where: str = "--set") -> ProjectSettings:
    """A copy of `settings` with `section.field=value` assignments applied and validated as a whole.

    Raises AitkError naming the assignment at fault (as `where` took it: `--set`, `project set`),
    with the nearest known key for a typo.
    """
    from .errors import AitkError

    data = settings.model_dump(mode="json")
    keys = setting_keys()
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep:
            raise AitkError(f"{where} {assignment!r}: expected section.field=value",
                            f"e.g. {'--set' if where == '--set' else 'aitk ' + where} finetune.lora_r=32")
        if key not in keys:
            near = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {near[0]}?" if near else "`aitk project keys` lists every setting"
            raise AitkError(f"{where} {assignment!r}: no setting {key!r}", hint)
        section, name = key.split(".", 1)
        field = ProjectSettings.model_fields[section].annotation.model_fields[name]
        data[section][name] = _parse_value(raw.strip(), field.annotation, key in ESCAPED_TEXT)
    try:
        return ProjectSettings.model_validate(data)
    except ValidationError as e:
        raise AitkError(format_validation_error(e, where), "`aitk project keys` shows each setting's "
                        "type, bounds and help") from None
