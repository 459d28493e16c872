"""AI Toolkit for VS Code projects: read one into aitk settings (`aitk project import`), and write
one from an aitk project (`aitk project export-aitk`).

AI Toolkit's generated `finetuning/olive-config.json` targets Olive 0.7: under the Olive aitk ships
it ignores `lora_r`/`lora_alpha` and its ONNX passes fail while the run exits 0. So its form
values are translated into settings (from which aitk regenerates a config for today's Olive),
not the file reused. Every value is shown in an `ImportReport`; what cannot be carried is listed
there, never silently dropped. AI Toolkit's own files are only read: importing in place adds
`aitk.toml` and aitk's generated files under names AI Toolkit does not use (`aitk_layout`).
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from . import aitk_layout as L
from . import catalog as cat
from .errors import AitkError
from .settings import MODELED_TRAINING_ARGS, NAME_RE, ProjectSettings, format_validation_error, unescape_text

SPLIT_TRAIN = "dataset/aitk-train.jsonl"
SPLIT_EVAL = "dataset/aitk-eval.jsonl"
_DOWNLOAD_RE = re.compile(r"(?:huggingface-cli|hf)\s+download\s+(\S+)(?:.*?--local-dir\s+(\S+))?")
_TOKEN_RE = re.compile(r"^<[a-z_]+>$")
_BUILDERS = {"json", "csv", "parquet", "text"}  # `datasets` builders: data_name of a local file

# training_args key -> finetune setting (same name unless given).
_TRAINING_KEYS = {k: k for k in (
    "seed", "data_seed", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "gradient_checkpointing", "learning_rate", "lr_scheduler_type",
    "num_train_epochs", "max_steps", "logging_steps", "eval_steps", "save_steps")}
_TRAINING_KEYS["output_dir"] = "checkpoint_dir"
_PASS_KEYS = {"lora_r": "lora_r", "r": "lora_r", "lora_alpha": "lora_alpha", "alpha": "lora_alpha",
              "lora_dropout": "lora_dropout", "compute_dtype": "compute_dtype", "quant_type": "quant_type",
              "double_quant": "double_quant", "target_modules": "target_modules"}
_DATA_KEYS = {"dataset_type": "dataset_type", "text_cols": "text_columns", "text_template": "text_template",
              "corpus_strategy": "corpus_strategy", "strategy": "corpus_strategy",
              "source_max_len": "source_max_len", "max_seq_len": "source_max_len", "pad_to_max_len": "pad_to_max_len"}


@dataclass
class Carried:
    key: str      # the aitk setting, `section.field`
    value: object
    source: str   # where in the AI Toolkit project it came from


@dataclass
class ImportReport:
    source: Path
    dest: Path
    settings: ProjectSettings
    carried: list[Carried] = field(default_factory=list)
    not_carried: list[str] = field(default_factory=list)   # "what: why"
    notes: list[str] = field(default_factory=list)
    azure: dict[str, dict] = field(default_factory=dict)   # infra file -> its filled values
    eval_split: tuple[list[dict], list[dict]] | None = None  # rows to write, local data only
    already: bool = False  # the folder had been imported before with the same result

    def lines(self) -> list[str]:
        out = [f"AI Toolkit project {self.source}", f"  -> aitk project {self.dest} ({self.settings.name})",
               "carried over:"]
        out += [f"  {c.key} = {c.value!r}   <- {c.source}" for c in self.carried]
        for infra, values in self.azure.items():
            out.append(f"Azure resources ({infra}):")
            out += [f"  {k} = {v}" for k, v in values.items()]
        if self.notes:
            out.append("notes:")
            out += [f"  {n}" for n in self.notes]
        out.append("not carried:" if self.not_carried else "not carried: nothing")
        out += [f"  {n}" for n in self.not_carried]
        return out


def is_aitk_project(root: str | Path) -> bool:
    return L.is_aitk_layout(root)


def _read_json(path: Path, what: str):
    """JSON, tolerating the generator's leftovers: `#...` marker lines and `<!-- -->` lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AitkError(f"cannot read {path}: {e.strerror or e}", "check the file's permissions") from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    kept = [line for line in text.splitlines() if not line.strip().startswith(("#", "<!--"))]
    try:
        return json.loads("\n".join(kept))
    except ValueError as e:
        raise AitkError(f"{path}: not valid JSON ({what}): {e}",
                        "AI Toolkit left it half-filled: fix it in VS Code (Configure Project) and retry") from None


def _form_values(root: Path) -> dict[str, object]:
    """replaceToken -> value of `setup/project-settings.json` (the form as last filled)."""
    path = root / L.PROJECT_SETTINGS
    if not path.is_file():
        return {}
    data = _read_json(path, "AI Toolkit's project settings")
    values = {}
    for group in data if isinstance(data, list) else []:
        for f in group.get("fields", []) if isinstance(group, dict) else []:
            if isinstance(f, dict) and "replaceToken" in f:
                values[f["replaceToken"]] = f.get("defaultValue")
    return values


def _prompt_from_script(root: Path) -> str | None:
    """The `template = "..."` literal of AI Toolkit's console chat script."""
    try:
        tree = ast.parse((root / L.CONSOLE_CHAT).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "template" for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    return None


def _unfilled(value) -> bool:
    return isinstance(value, str) and _TOKEN_RE.match(value) is not None


def _project_name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-._")[:64] or "aitk-project"
    return name if NAME_RE.match(name) else f"p-{name}"[:64]


def _model(root: Path, input_path: str, commands: list[str], rep: ImportReport, data: dict) -> None:
    """model.id and model.path: the local `model-cache/...` folder when it is there, else the hub
    id the remote COMMANDS download (AI Toolkit names the folder, not always the repo)."""
    repo = local_dir = None
    for command in commands:
        m = _DOWNLOAD_RE.search(command)
        if m:
            repo, local_dir = m.group(1), (m.group(2) or "").removeprefix("./").rstrip("/")
    if repo is None:
        repo = input_path.removeprefix("model-cache/")
        rep.notes.append(f"no download command in {L.FINETUNING_INFRA}: the hub id is taken from the "
                         f"model path ({repo})")
    if local_dir and local_dir != input_path:
        rep.notes.append(f"AI Toolkit downloads {repo} into {local_dir} but its Olive config reads "
                         f"{input_path}: aitk uses what is there")
    catalog = cat.load()
    entry = catalog.find(repo)
    candidates = [input_path, local_dir] if local_dir else [input_path]
    present = next((c for c in candidates if c and (root / c / "config.json").is_file()), None)
    path = present or repo
    model_id = entry.id if entry else repo
    from . import tiny

    if present and (root / present / tiny.MARKER).is_file():  # aitk's embedded model, exported with the project
        model_id, entry = tiny.TINY_ID, catalog.find(tiny.TINY_ID)
    data["model"] = {"id": model_id, "path": path}
    where = f"{L.OLIVE_CONFIG} input_model.model_path" if present == input_path else (
        f"{L.FINETUNING_INFRA} COMMANDS" if path == repo else f"{L.FINETUNING_INFRA} --local-dir")
    rep.carried.append(Carried("model.id", model_id, f"{L.FINETUNING_INFRA} COMMANDS ({repo})"))
    rep.carried.append(Carried("model.path", path, where))
    if entry is None:
        rep.notes.append(f"{repo} is not in aitk's catalog: LoRA targets and chat format come from its own "
                         "files once it is on this machine (`aitk model pull`)")
    return entry


def read_project(root: str | Path, dest: str | Path | None = None) -> ImportReport:
    """Translate the AI Toolkit project at `root` into settings and a report; writes nothing."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise AitkError(f"{root} is not a folder", "pass the folder AI Toolkit generated")
    if not L.is_aitk_layout(root):
        ours = (root / "aitk.toml").is_file()
        raise AitkError(f"{root} is not an AI Toolkit project (no {L.OLIVE_CONFIG} with {L.INVOKE_OLIVE} "
                        f"or {L.PROJECT_SETTINGS})" + (": it is an aitk project already" if ours else ""),
                        "open it with aitk directly" if ours else
                        "pass the folder AI Toolkit for VS Code generated (Generate Project)")
    config = _read_json(root / L.OLIVE_CONFIG, "AI Toolkit's Olive config")
    if not isinstance(config, dict):
        raise AitkError(f"{root / L.OLIVE_CONFIG}: not an Olive workflow config", "regenerate it in AI Toolkit")
    form = _form_values(root)
    dest_path = Path(dest).expanduser().absolute() if dest else root
    base = ProjectSettings(name=_project_name(dest_path))
    data = base.model_dump(mode="json")
    rep = ImportReport(root, dest_path, base)
    oc = L.OLIVE_CONFIG.as_posix()

    def take(section: str, key: str, value, source: str) -> None:
        if _unfilled(value):  # a token AI Toolkit left in the file: the form has its value
            filled = form.get(value)
            if filled is None or _unfilled(filled):
                rep.not_carried.append(f"{source}: left unfilled by AI Toolkit ({value})")
                return
            value, source = (unescape_text(filled) if isinstance(filled, str) else filled,
                             f"{L.PROJECT_SETTINGS} {value} ({source} was left unfilled)")
        data[section][key] = value
        rep.carried.append(Carried(f"{section}.{key}", value, source))

    infra: dict[str, dict] = {}
    for rel in (L.FINETUNING_INFRA, L.INFERENCE_INFRA):
        if (root / rel).is_file():
            values = _read_json(root / rel, "AI Toolkit's Azure settings")
            infra[rel.as_posix()] = values if isinstance(values, dict) else {}
    commands = infra.get(L.FINETUNING_INFRA.as_posix(), {}).get("COMMANDS") or []
    entry = _model(root, str(config.get("input_model", {}).get("model_path", "")), commands, rep, data)
    for rel, values in infra.items():
        filled = {k: v for k, v in values.items() if v not in (None, "", []) and k != "COMMANDS"}
        if filled:
            # Kept where it is: the Azure back end reads infra/finetuning.config.json itself.
            rep.azure[rel] = filled
    if rep.azure:
        data["target"]["where"] = "azure"
        rep.carried.append(Carried("target.where", "azure", f"{L.FINETUNING_INFRA} (provisioned resources)"))

    # Data.
    dcs = config.get("data_configs") or []
    dc = dcs[0] if dcs and isinstance(dcs[0], dict) else {}
    if len(dcs) > 1:
        rep.not_carried.append(f"{oc} data_configs[1:]: AI Toolkit wires no second data config")
    load = dc.get("load_dataset_config", {}) or {}
    name, files = load.get("data_name"), load.get("data_files")
    src = f"{oc} data_configs[0].load_dataset_config"
    if files:
        take("data", "dataset", files, f"{src}.data_files")
    elif name and name not in _BUILDERS:
        take("data", "dataset", name, f"{src}.data_name")
        if load.get("split"):
            take("data", "train_split", load["split"], f"{src}.split")
    pre = dc.get("pre_process_data_config", {}) or {}
    for key, value in pre.items():
        target = _DATA_KEYS.get(key)
        where = f"{oc} pre_process_data_config.{key}"
        if target:
            take("data", target, value, where)
        elif key != "use_attention_mask":
            rep.not_carried.append(f"{where} = {value!r}: no such setting in aitk")
    if dc.get("user_script"):
        rep.not_carried.append(f"{oc} user_script {dc['user_script']}: aitk's Olive config needs no user script")

    # Fine-tuning pass.
    passes = config.get("passes", {}) or {}
    ft_name = next((k for k, v in passes.items() if isinstance(v, dict)
                    and str(v.get("type", "")).lower() in {"qlora", "lora", "loftq"}), None)
    ft = passes.get(ft_name, {}) if ft_name else {}
    if ft:
        kind = str(ft["type"]).lower()
        take("finetune", "method", "lora" if kind == "lora" else "qlora", f"{oc} passes.{ft_name}.type")
        if kind == "loftq":
            take("finetune", "loftq", True, f"{oc} passes.{ft_name}.type")
    for key, value in ft.items():
        where = f"{oc} passes.{ft_name}.{key}"
        if key in _PASS_KEYS:
            take("finetune", _PASS_KEYS[key], value, where)
        elif key not in {"type", "training_args", "train_data_config", "eval_data_config"}:
            rep.not_carried.append(f"{where} = {value!r}: no such setting in aitk")
    extra = {}
    eval_strategy = None
    for key, value in (ft.get("training_args") or {}).items():
        where = f"{oc} passes.{ft_name}.training_args.{key}"
        if key in _TRAINING_KEYS:
            take("finetune", _TRAINING_KEYS[key], value, where)
        elif key in ("evaluation_strategy", "eval_strategy"):
            eval_strategy = (value, where)  # renamed eval_strategy in transformers >= 4.46
        elif key in MODELED_TRAINING_ARGS:
            rep.not_carried.append(f"{where} = {value!r}: aitk sets it ({MODELED_TRAINING_ARGS[key]})")
        elif isinstance(value, (str, bool, int, float)) and not _unfilled(value):
            extra[key] = value
        else:
            rep.not_carried.append(f"{where} = {value!r}: not a plain value")
    for pname, p in passes.items():
        if pname != ft_name:
            t = p.get("type", pname) if isinstance(p, dict) else pname
            rep.not_carried.append(f"{oc} passes.{pname} ({t}): replaced by `aitk export` (onnxruntime-genai "
                                   "model builder + ExtractAdapters), which works with today's Olive")
    per_run = [k for k in ("systems", "host", "target", "output_dir", "cache_dir", "search_strategy",
                           "evaluate_input_model", "log_severity_level") if k in config]
    if per_run:
        rep.not_carried.append(f"{oc} {', '.join(per_run)}: aitk sets these per run and device "
                               "(outputs under models/, a fresh Olive cache each run)")
    if "lr_scheduler_type" not in (ft.get("training_args") or {}):
        data["finetune"]["lr_scheduler_type"] = "linear"
        rep.notes.append("finetune.lr_scheduler_type = 'linear': the Hugging Face default AI Toolkit's run used")
    if _unfilled(data["finetune"]["checkpoint_dir"]) or data["finetune"]["checkpoint_dir"].startswith("/"):
        data["finetune"]["checkpoint_dir"] = base.finetune.checkpoint_dir

    # Inference prompt template: the form (JSON-escaped there), else the chat script's literal.
    prompt = form.get("<prompt_template>")
    if isinstance(prompt, str) and not _unfilled(prompt):
        take("inference", "prompt_template", unescape_text(prompt), f"{L.PROJECT_SETTINGS} <prompt_template>")
    elif (script := _prompt_from_script(root)) and not _unfilled(script):
        take("inference", "prompt_template", script, f"{L.CONSOLE_CHAT} template")
    if "<conda_env_name>" in form:
        rep.not_carried.append(f"{L.PROJECT_SETTINGS} conda environment {form['<conda_env_name>']!r}: aitk runs "
                               "in its own venv")

    # Target modules: AI Toolkit leaves them to Olive (attention only); aitk suggests every linear layer.
    if not ft.get("target_modules"):
        targets = list(entry.lora_targets) if entry else []
        if not targets:
            from .model_files import local_dir, target_modules

            folder = local_dir(data["model"]["path"], root)
            targets = target_modules(folder) if folder else []
        data["finetune"]["target_modules"] = targets
        rep.notes.append(f"finetune.target_modules = {targets!r}: " + (
            "the model's suggested LoRA targets (AI Toolkit used Olive's defaults)" if targets else
            "Olive's defaults for the architecture, as in AI Toolkit"))
    data["finetune"]["extra_training_args"] = extra
    if extra:
        rep.carried.append(Carried("finetune.extra_training_args", extra,
                                   f"{oc} passes.{ft_name}.training_args (passed to Olive as they are)"))

    # Eval: AI Toolkit's form asks for eval_dataset_size and nothing uses it; here it is a real split.
    _eval_split(root, form.get("<eval_dataset_size>"), data, rep, eval_strategy)

    from .devices import detect

    device = detect().best
    if data["finetune"]["compute_dtype"] == "float16" and device != "cuda":
        # AI Toolkit's config targets a CUDA GPU; float16 training runs nowhere else.
        data["target"]["device"] = "cuda"
        rep.notes.append("target.device = 'cuda': float16 training needs a CUDA GPU (AI Toolkit's config targets "
                         "one); `aitk project set finetune.compute_dtype=bfloat16 target.device=auto` trains here")
    data["inference"]["precision"] = "fp16" if device in ("cuda", "dml") else "int4"
    if "ModelBuilder" in passes:
        rep.notes.append(f"inference.precision = {data['inference']['precision']!r} for this machine "
                         f"(AI Toolkit's ModelBuilder used {passes['ModelBuilder'].get('precision')!r})")
    try:
        rep.settings = ProjectSettings.model_validate(data)
    except ValidationError as e:
        raise AitkError(format_validation_error(e, f"{root} (as aitk settings)"),
                        "fix that value in AI Toolkit's Configure Project form, then import again") from None
    return rep


def _eval_split(root: Path, size, data: dict, rep: ImportReport, eval_strategy) -> None:
    d = data["data"]
    where = f"{L.PROJECT_SETTINGS} <eval_dataset_size>"
    if size in (None, 0, "") or _unfilled(size) or not isinstance(size, (int, float)) or size < 0:
        d["eval_dataset"] = None
        if size not in (None,):
            rep.not_carried.append(f"{where} = {size!r}: not a row count or a fraction; no eval split")
        if eval_strategy:
            rep.not_carried.append(f"{eval_strategy[1]} = {eval_strategy[0]!r}: no eval data to evaluate on")
        return
    fraction = size < 1
    source = d["dataset"]
    from .datasets import is_file_source, load_rows

    if not is_file_source(source):
        # A hub dataset: split slicing, which Olive and aitk's checks both pass to `datasets`.
        split = d["train_split"]
        if fraction:
            keep = round((1 - size) * 100)
            d["train_split"], d["eval_split"] = f"{split}[:{keep}%]", f"{split}[{keep}%:]"
        else:
            d["train_split"], d["eval_split"] = f"{split}[:-{int(size)}]", f"{split}[-{int(size)}:]"
        d["eval_dataset"] = source
    else:
        path = root / source
        try:
            rows = load_rows(str(path)).rows
        except AitkError as e:
            raise AitkError(f"{where}: cannot split {source}: {e.message}", e.hint) from None
        n_eval = round(len(rows) * size) if fraction else int(size)
        if not 0 < n_eval < len(rows):
            rep.not_carried.append(f"{where} = {size!r}: {len(rows)} rows cannot give that split; no eval split")
            d["eval_dataset"] = None
            return
        order = list(range(len(rows)))
        random.Random(d.get("data_seed", data["finetune"]["data_seed"])).shuffle(order)
        held = set(order[:n_eval])
        rep.eval_split = ([r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)])
        rep.notes.append(f"{source} ({len(rows)} rows) stays as it is; aitk trains on {SPLIT_TRAIN} "
                         f"({len(rows) - n_eval} rows) and evaluates on {SPLIT_EVAL} ({n_eval} rows), "
                         f"drawn with data_seed {data['finetune']['data_seed']}")
        d["dataset"], d["eval_dataset"], d["eval_split"] = SPLIT_TRAIN, SPLIT_EVAL, "train"
    rep.carried.append(Carried("data.eval_dataset", d["eval_dataset"], f"{where} = {size!r}"))
    if eval_strategy:
        rep.notes.append(f"{eval_strategy[1]} = {eval_strategy[0]!r}: aitk evaluates every finetune.eval_steps "
                         "on the eval split")


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def import_project(root: str | Path, to: str | Path | None = None) -> ImportReport:
    """Import in place (adds aitk.toml and aitk's generated files; AI Toolkit's stay byte for
    byte), or into a new aitk project folder `to` (data and filled Azure settings copied)."""
    import tomllib

    from . import known_projects
    from .project import Project, create_project, regenerate

    rep = read_project(root, to)
    src = rep.source
    if to is None:
        settings_file = src / "aitk.toml"
        if settings_file.is_file():
            try:
                rep.already = tomllib.loads(settings_file.read_text(encoding="utf-8")) == rep.settings.to_toml_dict()
            except (OSError, ValueError):
                rep.already = False
            if not rep.already:  # settings changed in aitk since (or an aitk project exported): never lost
                raise AitkError(f"{settings_file} exists and differs from what AI Toolkit's files say",
                                "keep it (the project opens as it is), import into a new folder with --to DIR, "
                                "or move aitk.toml away to import AI Toolkit's values again")
        if rep.eval_split:
            _write_rows(src / SPLIT_TRAIN, rep.eval_split[0])
            _write_rows(src / SPLIT_EVAL, rep.eval_split[1])
        regenerate(Project(src, rep.settings))
        known_projects.remember(src)
        return rep
    dest = rep.dest
    if dest.exists():
        raise AitkError(f"{dest} already exists", "choose a new folder for --to; aitk never overwrites a project")
    settings = rep.settings.model_copy(deep=True)
    staging = Path(tempfile.mkdtemp(prefix=".aitk-import-"))
    try:
        if rep.eval_split:
            _write_rows(staging / SPLIT_TRAIN, rep.eval_split[0])
            _write_rows(staging / SPLIT_EVAL, rep.eval_split[1])
            train, evals = str(staging / SPLIT_TRAIN), str(staging / SPLIT_EVAL)
        else:
            d = settings.data
            train = str(src / d.dataset) if (src / d.dataset).is_file() else d.dataset
            evals = (str(src / d.eval_dataset) if d.eval_dataset and (src / d.eval_dataset).is_file()
                     else d.eval_dataset)
        model = src / settings.model.path
        if model.is_dir():  # the model-cache folder is large: referenced where it is, not copied
            settings.model.path = str(model)
        create_project(dest, settings, dataset=train, eval_dataset=evals)
        for rel in rep.azure:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rep


# --- The other way: an aitk project -> AI Toolkit's layout ------------------------------------------

_INVOKE = '''"""Run this project's fine-tuning with Olive, as AI Toolkit for VS Code does (written by aitk)."""

import os

from olive.workflows import run

run(os.path.join(os.path.dirname(os.path.abspath(__file__)), "olive-config.json"))
'''


def _field(token: str, label: str, kind: str, value, **extra) -> dict:
    return {"type": kind, "label": label, "replaceToken": token, "defaultValue": value, **extra}


def _form(s: ProjectSettings, eval_size: float) -> list[dict]:
    """AI Toolkit's "Configure Project" form, filled with this project's values."""
    from .settings import escape_text

    d, f = s.data, s.finetune
    return [
        {"groupId": "model_inference", "title": "Model inference settings", "fields": [
            _field("<conda_env_name>", "Conda environment name:", "String", f"{s.name}-env"),
            _field("<prompt_template>", "Inference prompt template:", "String",
                   escape_text(s.inference.prompt_template))]},
        {"groupId": "data_configs", "title": "Data settings", "fields": [
            _field("<data_configs_data_files>", "Dataset name:", "String", d.dataset, optionValues=[d.dataset]),
            _field("<data_configs_split>", "Training split:", "String", d.train_split),
            _field("<dataset_type>", "Dataset type:", "String", d.dataset_type),
            _field("<text_cols>", "Text columns:", "String", list(d.text_columns), isArray=True),
            _field("<text_template>", "Text template:", "String", escape_text(d.text_template)),
            _field("<line_by_line>", "Corpus strategy:", "String", d.corpus_strategy,
                   optionValues=["line-by-line", "join"]),
            _field("<source_max_len>", "Source max length:", "Integer", d.source_max_len),
            _field("<pad_to_max_len>", "Pad to max length:", "Boolean", d.pad_to_max_len)]},
        {"groupId": "fine_tune", "title": "Fine tune settings", "fields": [
            _field("<compute_dtype>", "Compute dtype:", "String", f.compute_dtype, optionValues=["bfloat16", "float16"]),
            _field("<quant_type>", "Quant type:", "String", f.quant_type, optionValues=["nf4", "fp4"]),
            _field("<double_quant>", "Double quant:", "Boolean", f.double_quant),
            _field("<lora_r>", "Lora r:", "Integer", f.lora_r),
            _field("<lora_alpha>", "Lora alpha:", "Integer", int(f.lora_alpha) if f.lora_alpha.is_integer()
                   else f.lora_alpha),
            _field("<lora_dropout>", "Lora dropout:", "Number", f.lora_dropout),
            _field("<eval_dataset_size>", "Eval dataset size:", "Integer", eval_size),
            _field("<training_args_seed>", "Seed:", "Integer", f.seed),
            _field("<training_args_data_seed>", "Data seed:", "Integer", f.data_seed),
            _field("<per_device_train_batch_size>", "Per device train batch size:", "Integer",
                   f.per_device_train_batch_size),
            _field("<per_device_eval_batch_size>", "Per device eval batch size:", "Integer",
                   f.per_device_eval_batch_size),
            _field("<gradient_accumulation_steps>", "Gradient accumulation steps:", "Integer",
                   f.gradient_accumulation_steps),
            _field("<gradient_checkpointing>", "Enable gradient checkpointing:", "Boolean", f.gradient_checkpointing),
            _field("<learning_rate>", "Learning rate:", "Number", f.learning_rate),
            _field("<num_train_epochs>", "Number of epochs:", "Integer",
                   int(f.num_train_epochs) if f.num_train_epochs.is_integer() else f.num_train_epochs),
            _field("<max_steps>", "Max steps:", "Integer", f.max_steps),
            _field("<output_dir>", "Checkpoint output dir", "String", f.checkpoint_dir)]},
    ]


def _ai_toolkit_olive_config(s: ProjectSettings, model_path: str) -> dict:
    """The Olive config in the shape AI Toolkit generates (its Olive 0.7 names: lora_r, lora_alpha),
    with only the fine-tuning pass: its ONNX passes fail under the Olive aitk ships."""
    from .datasets import is_file_source

    d, f = s.data, s.finetune
    load = ({"data_name": {"jsonl": "json"}.get(Path(d.dataset).suffix.lstrip("."), Path(d.dataset).suffix.lstrip(".")),
             "data_files": d.dataset, "split": "train"} if is_file_source(d.dataset)
            else {"data_name": d.dataset, "split": d.train_split})
    training_args = {k: getattr(f, v) for k, v in _TRAINING_KEYS.items()}
    training_args.update(f.extra_training_args)
    fine_tune = {"type": "QLoRA" if f.method == "qlora" else "LoRA", "compute_dtype": f.compute_dtype,
                 "lora_r": f.lora_r, "lora_alpha": f.lora_alpha, "lora_dropout": f.lora_dropout,
                 "train_data_config": "dataset_default_train", "training_args": training_args}
    if f.method == "qlora":
        fine_tune.update(quant_type=f.quant_type, double_quant=f.double_quant)
    if f.target_modules:
        fine_tune["target_modules"] = list(f.target_modules)
    return {
        "input_model": {"type": "HfModel", "model_path": model_path, "load_kwargs": {"trust_remote_code": True}},
        "data_configs": [{"name": "dataset_default_train", "type": "HuggingfaceContainer",
                          "load_dataset_config": load,
                          "pre_process_data_config": {
                              "dataset_type": d.dataset_type, "text_cols": list(d.text_columns),
                              "text_template": d.text_template, "corpus_strategy": d.corpus_strategy,
                              "source_max_len": d.source_max_len, "pad_to_max_len": d.pad_to_max_len}}],
        "passes": {"qlora" if f.method == "qlora" else "lora": fine_tune},
        "cache_dir": "cache",
        "output_dir": "models/qlora",
    }


def _eval_size(project) -> float:
    """AI Toolkit's eval_dataset_size for this project's eval data: its share of all rows."""
    from .datasets import is_file_source, load_rows

    d = project.settings.data
    if not d.eval_dataset:
        return 0
    if not (is_file_source(d.dataset) and is_file_source(d.eval_dataset)):
        return 0.3
    try:
        n_train = len(load_rows(str(project.path(d.dataset))).rows)
        n_eval = len(load_rows(str(project.path(d.eval_dataset))).rows)
    except AitkError:
        return 0.3
    return round(n_eval / (n_train + n_eval), 3) if n_train + n_eval else 0


def export_aitk(project) -> list[Path]:
    """Write AI Toolkit's layout into `project`'s folder (the form filled, its Olive config and
    script, infra/*.config.json), next to aitk's files; return what was written. aitk's own
    generated files move to the names they have in an AI Toolkit folder."""
    from .project import CHAT_SCRIPT, generated_files, regenerate

    root, s = project.root, project.settings
    entry = cat.load().find(s.model.id)
    repo = entry.repo if entry and entry.repo else (s.model.path if cat.REPO_RE.match(s.model.path) else None)
    local = project.path(s.model.path)
    model_path = s.model.path if local.is_dir() else f"model-cache/{repo}"
    files: dict[Path, str] = {
        L.PROJECT_SETTINGS: json.dumps(_form(s, _eval_size(project)), indent=2) + "\n",
        L.OLIVE_CONFIG: json.dumps(_ai_toolkit_olive_config(s, model_path), indent=4) + "\n",
        L.INVOKE_OLIVE: _INVOKE,
    }
    commands = ["cd /mount", "pip install -r ./setup/requirements.txt"]
    if not local.is_dir() and repo:
        commands.append(f"huggingface-cli download {repo} --local-dir ./{model_path} --cache-dir ./cache/hfdownload")
    commands.append("python3 ./finetuning/invoke_olive.py")
    infra = {L.FINETUNING_INFRA: dict.fromkeys(("SUBSCRIPTION_ID", "RESOURCE_GROUP_NAME", "STORAGE_ACCOUNT_NAME",
                                                 "FILE_SHARE_NAME", "ACA_JOB_NAME")) | {"COMMANDS": commands},
             L.INFERENCE_INFRA: dict.fromkeys(("SUBSCRIPTION_ID", "RESOURCE_GROUP_NAME", "STORAGE_ACCOUNT_NAME",
                                                "FILE_SHARE_NAME", "ACA_APP_NAME", "ACA_APP_ENDPOINT"))}
    for rel, values in infra.items():
        if not (root / rel).is_file():  # provisioned values (aitk azure provision writes them) are kept
            files[rel] = json.dumps(values, indent=2) + "\n"
    # aitk's generated files give way to AI Toolkit's names first (the Olive config is replaced).
    own = (L.OWN_OLIVE_CONFIG, L.OWN_CHAT_SCRIPT, L.OWN_README)
    if generated_files(root) != own:
        for old, new in zip((CHAT_SCRIPT, Path("README.md")), own[1:]):
            if (root / old).is_file():
                os.replace(root / old, root / new)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        tmp = (root / rel).with_name(f".{(root / rel).name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, root / rel)
    regenerate(project)  # now under aitk's names in an AI Toolkit folder
    return sorted(files)
