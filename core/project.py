"""Project folders: create (atomically), load, re-generate.

A project is self-contained: its settings (`aitk.toml`), its data, for the embedded model the
model itself, an Olive config that runs without aitk, a console chat script, and a README.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from pydantic import ValidationError

from . import adapters, aitk_layout, known_projects, olive_config, paths, tiny
from .datasets import local_file
from .devices import detect
from .errors import AitkError
from .defaults import default_settings
from .settings import ProjectSettings, format_validation_error

SETTINGS_FILE = "aitk.toml"
OLIVE_CONFIG = Path("finetuning") / "olive-config.json"
CHAT_SCRIPT = Path("inference") / "console_chat.py"
ADAPTER_DIR = adapters.LEGACY_DIR  # where `olive run` of the project's config writes its adapter
ONNX_DIR = Path("models") / "onnx"


@dataclass
class Project:
    root: Path
    settings: ProjectSettings

    @property
    def name(self) -> str:
        return self.settings.name

    def path(self, rel: str | Path) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    @property
    def adapter_dir(self) -> Path:
        """The active adapter's folder (core/adapters.py: a project keeps several, by name)."""
        return adapters.active_dir(self.root)

    def onnx_dir(self, precision: str | None = None) -> Path:
        return self.root / ONNX_DIR / (precision or self.settings.inference.precision)

    def base_model_path(self) -> str:
        """A local folder, or a hub id (anything that is not an existing folder)."""
        local = self.path(self.settings.model.path)
        return str(local) if local.is_dir() else self.settings.model.path

    def device(self) -> str:
        d = self.settings.target.device
        return detect().best if d == "auto" else d


def load_project(root: str | Path) -> Project:
    root = Path(root).expanduser().resolve()
    file = root / SETTINGS_FILE
    if not root.exists():
        raise AitkError(f"project folder {root} does not exist (deleted or moved?)",
                        "pass an existing project folder, or create one with `aitk project new DIR`")
    if not file.is_file():
        raise AitkError(f"{root} is not an aitk project (no {SETTINGS_FILE})",
                        "run inside a project folder, pass --project DIR, or create one with `aitk project new DIR`")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise AitkError(f"cannot read {file}: {e.strerror or e}", "check the file's permissions") from None
    except RecursionError:
        raise AitkError(f"{file}: not valid TOML: nested too deeply", "fix the file or regenerate the project") from None
    except ValueError as e:  # TOMLDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise AitkError(f"{file}: not valid TOML: {e}", "fix the file or regenerate the project") from None
    try:
        settings = ProjectSettings.model_validate(data)
    except ValidationError as e:
        raise AitkError(format_validation_error(e, str(file)), "fix that field in aitk.toml") from None
    return Project(root, settings)


def find_project(start: str | Path | None = None, *, optional: bool = False) -> Project | None:
    """The project every command with `-P/--project` works on: exactly `start` when given, else the
    nearest one from the current directory upward (None there with `optional`, else the
    "not a project" error). The project is remembered, so the app and `aitk project list` show it."""
    if start is None:
        here = Path.cwd().resolve()
        start = next((d for d in (here, *here.parents) if (d / SETTINGS_FILE).is_file()), None)
        if start is None:
            if optional:
                return None
            start = here  # load_project raises the "not a project" error
    project = load_project(start)
    known_projects.remember(project.root)
    return project


def text_template_around(start: str | Path | None = None) -> tuple[str, str] | None:
    """(name, text template) of the project at `start`, or around the current directory; None
    outside any project (a dataset is then checked without a template)."""
    project = find_project(start, optional=True)
    return None if project is None else (project.name, project.settings.data.text_template)


def generated_files(root: Path) -> tuple[Path, Path, Path]:
    """(Olive config, chat script, README) relative to the project: AI Toolkit's own names are
    left to it in a folder it generated (an imported project still opens in AI Toolkit)."""
    if aitk_layout.is_aitk_layout(root):
        return aitk_layout.OWN_OLIVE_CONFIG, aitk_layout.OWN_CHAT_SCRIPT, aitk_layout.OWN_README
    return OLIVE_CONFIG, CHAT_SCRIPT, Path("README.md")


def _write_generated(root: Path, settings: ProjectSettings, layout: tuple[Path, Path, Path],
                     project_root: Path | None = None) -> None:
    """Everything derived from the settings, at the places `layout` names; rewritten by `regenerate`
    (into a staging folder `root` of the project at `project_root`)."""
    from .model_files import check_model_consistency

    check_model_consistency(settings.model, project_root or root)
    olive_file, chat_file, readme = layout
    device = detect().best if settings.target.device == "auto" else settings.target.device
    config = olive_config.build(settings, device, project_root or root)
    (root / olive_file).parent.mkdir(parents=True, exist_ok=True)
    (root / olive_file).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (root / chat_file).parent.mkdir(parents=True, exist_ok=True)
    (root / chat_file).write_text(_chat_script(settings), encoding="utf-8")
    (root / readme).write_text(_readme(settings, olive_file, chat_file), encoding="utf-8")
    (root / SETTINGS_FILE).write_text(tomli_w.dumps(settings.to_toml_dict()), encoding="utf-8")


def _copy_dataset(source: str, dest_dir: Path, base: Path) -> str:
    """Copy a local dataset file into the project (refusing what is not one); hub names are kept."""
    src = local_file(source, base)
    if src is None:
        return source  # a Hugging Face dataset name
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest_dir / src.name)
    return f"dataset/{src.name}"


def create_project(
    dest: str | Path,
    settings: ProjectSettings | None = None,
    *,
    model_id: str = tiny.TINY_ID,
    dataset: str | None = None,
    eval_dataset: str | None = None,
    tiny_spec: tiny.TinySpec = tiny.DEMO,
) -> Project:
    """Write a new project folder at `dest`; refuse if anything is there already.

    Built in a temporary sibling and renamed into place: an error at any point leaves nothing.
    `dataset` / `eval_dataset` (paths relative to the current directory, or hub names) replace
    the bundled dataset; without them a tiny-model project gets the bundled one.
    """
    dest = Path(dest).expanduser().absolute()
    try:  # the name first: `..` or `a b` must be refused as names, not found to "exist"
        ProjectSettings(name=settings.name if settings else dest.name)
    except ValidationError as e:
        raise AitkError(format_validation_error(e, "project name"), "choose another folder name") from None
    if dest.exists():
        raise AitkError(f"{dest} already exists", "choose a new folder; aitk never overwrites a project")
    if not dest.parent.is_dir():
        raise AitkError(f"parent folder {dest.parent} does not exist", "create it first or choose another place")
    if settings is None:
        settings = default_settings(dest.name, model_id, detect().best)
    settings = settings.model_copy(deep=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        cwd = Path.cwd()
        if dataset is None and settings.data.dataset.startswith("dataset/"):
            bundled = paths.bundled_data() / "tiny_qa"
            settings.data.dataset = _copy_dataset(str(bundled / "train.jsonl"), tmp / "dataset", cwd)
            settings.data.eval_dataset = _copy_dataset(str(bundled / "eval.jsonl"), tmp / "dataset", cwd)
        if dataset is not None:
            settings.data.dataset = _copy_dataset(dataset, tmp / "dataset", cwd)
            settings.data.eval_dataset = (
                _copy_dataset(eval_dataset, tmp / "dataset", cwd) if eval_dataset else None
            )
        if settings.model.id == tiny.TINY_ID:
            # Small enough (a few MB) to live in the project: it then runs anywhere, Olive alone too.
            shutil.copytree(tiny.ensure_tiny(tiny_spec), tmp / "model")
            settings.model.path = "model"
        _write_generated(tmp, settings, generated_files(tmp))
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    known_projects.remember(dest)  # listed in the app and by `aitk project list`, wherever it lives
    return Project(dest, settings)


def regenerate(project: Project) -> None:
    """Rewrite the derived files after the settings changed. Each file is replaced atomically."""
    layout = generated_files(project.root)
    generated = (*layout, Path(SETTINGS_FILE))
    for rel in generated:  # checked first, so a refusal leaves every file as it was
        target, folder = project.root / rel, (project.root / rel).parent
        blocker = (folder if folder.exists() and not folder.is_dir() else
                   target if (target.exists() or target.is_symlink()) and not target.is_file() else None)
        if blocker is not None:
            raise AitkError(f"{blocker} is in the way of the generated {rel.as_posix()}",
                            f"move it aside (e.g. `mv {blocker} {blocker}.old`), then run the command again")
    staging = Path(tempfile.mkdtemp(prefix=".regen-", dir=project.root))
    try:
        _write_generated(staging, project.settings, layout, project.root)
        for rel in generated:
            (project.root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, project.root / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _chat_script(s: ProjectSettings) -> str:
    return f'''"""Console chat with this project's model, with nothing but onnxruntime-genai installed.

    python inference/console_chat.py                 # the fine-tuned model (the active adapter)
    python inference/console_chat.py --adapter NAME  # another adapter the export carries
    python inference/console_chat.py --base          # the base model, for comparison

Run `aitk export` first; it writes the ONNX model and adapter under {ONNX_DIR}/.
"""

import argparse
import json
from pathlib import Path

import onnxruntime_genai as og

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "{ONNX_DIR.as_posix()}" / "{s.inference.precision}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", action="store_true", help="chat with the base model (no adapter)")
    ap.add_argument("--adapter", help="an adapter by name (default: the one exported as active)")
    ap.add_argument("--max-new-tokens", type=int, default={s.inference.max_new_tokens})
    args = ap.parse_args()
    model = og.Model(str(MODEL))
    tokenizer = og.Tokenizer(model)
    adapters = og.Adapters(model)
    # "base" is an all-zero adapter of the same shape: the base model, with stable shapes.
    try:
        active = json.loads((MODEL / "aitk-export.json").read_text()).get("active") or "tuned"
    except (OSError, ValueError):
        active = "tuned"
    name = "base" if args.base else (args.adapter or active)
    adapter = MODEL / "adapters" / f"{{name}}.onnx_adapter"
    if adapter.exists():
        adapters.load(str(adapter), name)
    stream = tokenizer.create_stream()
    history = []
    print("Type a message; an empty line quits.")
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            break
        if not text:
            break
        history.append({{"role": "user", "content": text}})
        prompt = tokenizer.apply_chat_template(json.dumps(history), add_generation_prompt=True)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(tokenizer.encode(prompt)) + args.max_new_tokens,
                                  do_sample=False)
        gen = og.Generator(model, params)
        if adapter.exists():
            gen.set_active_adapter(adapters, name)
        gen.append_tokens(tokenizer.encode(prompt))
        reply = []
        while not gen.is_done():
            gen.generate_next_token()
            piece = stream.decode(gen.get_next_tokens()[0])
            reply.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({{"role": "assistant", "content": "".join(reply).strip()}})


if __name__ == "__main__":
    main()
'''


def _readme(s: ProjectSettings, olive_file: Path = OLIVE_CONFIG, chat_file: Path = CHAT_SCRIPT) -> str:
    f = s.finetune
    return f"""# {s.name}

An aitk project: {f.method.upper()} fine-tuning of `{s.model.id}` on `{s.data.dataset}`.

| | |
|---|---|
| base model | `{s.model.path}` |
| training data | `{s.data.dataset}` (eval: `{s.data.eval_dataset or "none"}`) |
| method | {f.method}, r={f.lora_r}, alpha={f.lora_alpha}, lr={f.learning_rate}, steps={f.max_steps} |
| target | {s.target.where} ({s.target.device}) |

## With aitk

    aitk finetune     # trains; adapter in {adapters.ROOT.as_posix()}/<job id>/ (`aitk adapters` lists them)
    aitk export       # ONNX for onnxruntime-genai in {ONNX_DIR.as_posix()}/{s.inference.precision}/
    aitk chat         # chat with the tuned model (--base for the base model)

## Without aitk

    olive run --config {olive_file.as_posix()}

(from this folder; checkpoints go to `{f.checkpoint_dir}/` and a rerun resumes from the last one:
delete that folder to start over). The adapter lands in `{ADAPTER_DIR.as_posix()}/`, which aitk lists as
the adapter `olive`; `aitk adapters rename olive NAME` files it under a name of its own.
`python {chat_file.as_posix()}` chats with the exported model.

Settings live in `aitk.toml`; after editing it run `aitk project regen` to rewrite the generated files.
"""
