"""The fine-tune and export steps as they run inside a job process.

`finetune_config` derives the run's Olive config from the project's settings: the same config
the project carries for `olive run`, with outputs, cache and checkpoints moved into the job's
own folder (so two runs never share a cache or resume each other's checkpoints by accident).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from . import olive_config, publish
from .errors import AitkError
from .project import Project


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    best = None
    for d in checkpoint_dir.glob("checkpoint-*") if checkpoint_dir.is_dir() else ():
        tail = d.name.rsplit("-", 1)[-1]
        if tail.isdigit() and (d / "trainer_state.json").is_file() and (best is None or int(tail) > best[0]):
            best = (int(tail), d)
    return best[1] if best else None


def finetune_config(project: Project, job_dir: Path, device: str, resume_from: Path | None = None) -> dict:
    config = olive_config.build(project.settings, device, project.root)
    base = project.base_model_path()
    config["input_model"]["model_path"] = base
    config["output_dir"] = str(job_dir / "output")
    config["cache_dir"] = str(job_dir / "olive-cache")
    args = config["passes"]["finetune"]["training_args"]
    args["output_dir"] = str(job_dir / "checkpoints")
    if resume_from is not None:
        args["resume_from_checkpoint"] = str(resume_from)
    for dc in config["data_configs"]:
        files = dc["load_dataset_config"].get("data_files")
        if files:
            dc["load_dataset_config"]["data_files"] = str(project.path(files))
    return config


def check_data(project: Project) -> None:
    """Fail in a second, with the file and line, rather than after Olive has loaded torch."""
    from . import datasets
    from .datasets import is_file_source

    d = project.settings.data
    for source in filter(None, (d.dataset, d.eval_dataset)):
        local = is_file_source(source)
        report = datasets.check_dataset(str(project.path(source)) if local else source,
                                        text_template=d.text_template)
        if not report.ok:
            first = report.issues[0]
            raise AitkError(report.format().splitlines()[0], first.hint or "fix the dataset and retry")


@contextlib.contextmanager
def _olive_without_waste():
    """Two things Olive does for its cache that cost an aitk job seconds and buy it nothing (each
    job has a fresh cache, cleaned at the start), undone for this job process only:

    - it keys the input model by hashing every byte of its files: ~3 s before training at
      Qwen2.5-0.5B's layer shape (1.4 GB), more for bigger models. Here the key is the files'
      names, sizes and mtimes, which tells the same models apart within one job just as well;
    - it saves its output model with every local resource copied into the output folder: the
      adapter and the whole base model (1.4 GB there), which aitk then deleted. Olive's own
      `only_cache_files` copies only what the run made (the adapter) and leaves the base as a
      reference, but the engine never sets it and Olive 0.13's `save_model` does not pass it on
      for a plain HfModel: so it is set where it is read (`_save_model`).
    """
    from olive.cache import OliveCache
    from olive.common.utils import hash_string
    from olive.model.config.model_config import ModelConfig

    original_save, original_hash = OliveCache._save_model, ModelConfig._get_file_hash

    def _save_model(self, model_json, output_dir, overwrite=False, only_cache_files=False, path_prefix=None):
        return original_save(self, model_json, output_dir, overwrite, True, path_prefix)

    def _get_file_hash(self, file_path: Path):
        files = sorted(f for f in file_path.rglob("*") if f.is_file()) if file_path.is_dir() else [file_path]
        if not all(f.is_file() for f in files):
            return original_hash(self, file_path)
        return [hash_string("".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns};" for f in files))[:8]]

    OliveCache._save_model, ModelConfig._get_file_hash = _save_model, _get_file_hash
    try:
        yield
    finally:
        OliveCache._save_model, ModelConfig._get_file_hash = original_save, original_hash


def run_finetune(project: Project, job_dir: Path, device: str, resume_from: Path | None = None) -> Path:
    """Run the Olive workflow in this process; return the adapter folder."""
    check_data(project)
    config = finetune_config(project, job_dir, device, resume_from)
    (job_dir / "olive-config.json").write_text(json.dumps(config, indent=2))
    from . import metrics

    metrics.install_callback(str(job_dir / "metrics.jsonl"))
    from olive.workflows import run
    from transformers import set_seed

    # The Trainer seeds itself only once the model exists: the adapter's random initialisation
    # (peft, inside Olive's pass) drew from an unseeded generator, so a rerun from the manifest
    # started elsewhere and its eval loss differed by ~3%. Seeded here, a rerun starts the same.
    set_seed(project.settings.finetune.seed)

    print(f"[aitk] fine-tuning {project.settings.model.id} ({project.settings.finetune.method}) on {device}",
          flush=True)
    with _olive_without_waste():
        run(config)
    adapter = job_dir / "output" / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise AitkError("Olive finished without writing an adapter", "see the job log")
    shutil.rmtree(job_dir / "olive-cache", ignore_errors=True)
    publish_adapter(project, adapter, job_dir.name)
    return adapter


def publish_adapter(project: Project, adapter: Path, name: str | None = None) -> str:
    """Keep this run's adapter in the project under `name` (the job id; a fresh one if None) and
    make it the active one (where export and chat look), in one atomic swap; return its version id."""
    from . import adapters

    return adapters.publish_adapter(project.root, adapter, name or adapters.new_name())


def preflight(kind: str, project: Project, device: str, params: dict, parent: str | None) -> None:
    """Refuse a job that cannot succeed, before it is queued, naming what would work."""
    if kind in ("finetune", "export", "evaluate"):
        from .model_files import require_local

        require_local(project.settings.model, project.root)
    if kind == "finetune":
        olive_config.pass_config(project.settings, device)
    elif kind == "export":
        from .export import check_precision

        check_precision(params.get("precision") or project.settings.inference.precision, device)
        if params.get("merged") and params.get("base_only"):
            raise AitkError("a merged export folds the adapter into the base: it cannot be base-only",
                            "use --merged or --base-only, not both")
        if not params.get("base_only") and parent is None and publish.current_adapter(project) is None:
            raise AitkError(f"{project.name} has no fine-tuned adapter yet",
                            "run `aitk finetune` first, or `aitk export --base-only`")


def merged_dir(project: Project, precision: str | None = None) -> Path:
    """Where the merged export of `precision` lives: `models/onnx/<precision>-merged`."""
    from .export import MERGED_SUFFIX

    return project.onnx_dir((precision or project.settings.inference.precision) + MERGED_SUFFIX)


def run_export(project: Project, job_dir: Path, device: str, precision: str, base_only: bool = False,
               merged: bool = False) -> Path:
    from .export import export_model

    adapter = None if base_only else publish.current_adapter(project)
    if not base_only and adapter is None:
        raise AitkError(f"{project.name} has no fine-tuned adapter yet",
                        "run `aitk finetune` first, or `aitk export --base-only`")
    # Every adapter of the project, the active one first: one .onnx_adapter each (core/adapters.py).
    from . import adapters

    named = adapters.for_export(project.root) if adapter is not None else {}
    name = next(iter(named), None)
    print(f"[aitk] exporting {project.settings.model.id} ({precision}, {device})"
          + (f" with adapter {name} merged into the weights" if merged else
             f" with adapters {', '.join(named)}" if named else ""), flush=True)
    as_named = {"name": name} if name else {}
    if merged:
        return export_model(project.base_model_path(), adapter, merged_dir(project, precision),
                            precision=precision, device=device, merged=True, **as_named)
    out = export_model(project.base_model_path(), adapter, project.onnx_dir(precision), precision=precision,
                       device=device, others=dict(list(named.items())[1:]), **as_named)
    if adapter is not None and project.settings.inference.merged_export:
        print("[aitk] and the merged form (inference.merged_export)", flush=True)
        export_model(project.base_model_path(), adapter, merged_dir(project, precision), precision=precision,
                     device=device, merged=True, **as_named)
    return out
