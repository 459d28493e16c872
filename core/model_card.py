"""The model card of a fine-tune (README.md) and its loss chart (SVG), for the Hub or a folder.

The card is built from what aitk recorded, not from what the project says now: the fine-tune
job's manifest (model revision, data hashes and rows, settings, packages), its metrics.jsonl
(the loss curve), and the latest evaluation's result.json. The SVG is written here by hand (a
polyline per series) so a report needs no plotting library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

from . import atomic_file, provenance
from .errors import AitkError
from .jobs import SUCCEEDED, JobRecord, JobStore

LOSS_SVG = "loss.svg"
CARD = "README.md"


@dataclass
class CardFacts:
    project: object
    finetune: JobRecord | None
    manifest: dict | None
    metrics: list[dict]
    evaluation: dict | None


def _result(store: JobStore, rec: JobRecord) -> dict | None:
    if rec.result:
        return rec.result
    try:
        return json.loads((store.job_dir(rec.id) / "result.json").read_text())
    except (OSError, ValueError):
        return None


def gather(project, store: JobStore, job_id: str | None = None) -> CardFacts:
    """The facts of the fine-tune `job_id` (an export or evaluation: the fine-tune it followed),
    else of the project's latest succeeded fine-tune."""
    jobs = store.list(project=str(project.root))
    finetune = None
    if job_id is not None:
        rec = store.get(job_id)
        finetune = rec if rec.kind == "finetune" else (store.get(rec.parent) if rec.parent else None)
        if finetune is None:
            raise AitkError(f"job {rec.id} is a {rec.kind} job with no fine-tune before it",
                            "pass the id of a fine-tune job (`aitk jobs list`)")
    else:
        finetune = next((r for r in jobs if r.kind == "finetune" and r.status == SUCCEEDED), None)
    evaluation = None
    for r in jobs:
        if r.kind == "evaluate" and r.status == SUCCEEDED and (finetune is None or r.created >= finetune.created):
            evaluation = _result(store, r)
            if evaluation:
                break
    manifest = provenance.read(store.job_dir(finetune.id)) if finetune else None
    metrics = store.metrics(finetune.id) if finetune else []
    return CardFacts(project, finetune, manifest, metrics, evaluation)


def loss_svg(metrics: list[dict], width: int = 640, height: int = 320) -> str | None:
    """Training (and eval) loss against step as a standalone SVG; None without loss points."""
    series = {key: [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))
                    and isinstance(m.get("step"), (int, float))] for key in ("loss", "eval_loss")}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    points = [p for s in series.values() for p in s]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9 + abs(y0) * 0.01)
    left, right, top, bottom = 56, 16, 24, 40
    w, h = width - left - right, height - top - bottom

    def xy(step, value):
        return left + (step - x0) / (x1 - x0) * w, top + (1 - (value - y0) / (y1 - y0)) * h

    colours = {"loss": "#1f77b4", "eval_loss": "#d62728"}
    labels = {"loss": "train loss", "eval_loss": "eval loss"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#333"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#333"/>']
    for i in range(5):
        value = y0 + (y1 - y0) * i / 4
        _, y = xy(x0, value)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    for i in range(5):
        step = x0 + (x1 - x0) * i / 4
        x, _ = xy(step, y0)
        out.append(f'<text x="{x:.1f}" y="{top + h + 16}" text-anchor="middle">{step:.0f}</text>')
    out.append(f'<text x="{left + w / 2}" y="{height - 6}" text-anchor="middle">step</text>')
    for n, (key, pts) in enumerate(series.items()):
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(*p) for p in pts))
        if len(pts) == 1:
            x, y = xy(*pts[0])
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colours[key]}"/>')
        else:
            out.append(f'<polyline fill="none" stroke="{colours[key]}" stroke-width="2" points="{coords}"/>')
        out.append(f'<text x="{left + w - 4}" y="{top + 14 + 16 * n}" text-anchor="end" '
                   f'fill="{colours[key]}">{escape(labels[key])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", "\\n") for c in cells) + " |"


def card(facts: CardFacts, *, files: list[str] | None = None, chart: str | None = LOSS_SVG) -> str:
    """README.md with Hub metadata: base model, dataset, settings, training, evaluation, files."""
    project = facts.project
    m = facts.manifest or {}
    settings = m.get("settings") or project.settings.model_dump(mode="json")
    model = m.get("model") or provenance.model_record(project)
    f, d = settings["finetune"], settings["data"]
    base_id = project.base_model_path()
    hub_base = base_id if not Path(base_id).is_dir() else None
    meta = ["---", "library_name: peft", "tags:", "- aitk", "- olive", f"- {f['method']}", "- onnxruntime-genai"]
    if hub_base:
        meta.append(f"base_model: {hub_base}")
    out = [*meta, "---", "", f"# {project.name}", "",
           f"A {f['method'].upper()} adapter for **{model.get('id')}**, fine-tuned with aitk (Olive)"
           + (", and its ONNX export for onnxruntime-genai." if files and any(p.startswith("onnx/") for p in files)
              else "."), "",
           "## Base model", "", _row("id", "path", "revision", "config.json sha256"), _row("---", "---", "---", "---"),
           _row(model.get("id"), model.get("path"), model.get("revision") or "-",
                (model.get("config_sha256") or "-")[:16]), "",
           "## Dataset", "", _row("split", "source", "rows", "sha256"), _row("---", "---", "---:", "---")]
    data = m.get("data") or {"train": provenance.dataset_record(project, d["dataset"], d["train_split"]),
                              "eval": provenance.dataset_record(project, d["eval_dataset"], d["eval_split"])}
    for split, rec in data.items():
        if rec:
            out.append(_row(split, Path(rec["source"]).name, rec.get("rows", "-"), (rec.get("sha256") or "-")[:16]))
    out += ["", "Text template (`{column}` is a row's value):", "", "```text", d["text_template"], "```", "",
            "## Settings", "", _row("setting", "value"), _row("---", "---")]
    for key in ("method", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate",
                "lr_scheduler_type", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                "gradient_accumulation_steps", "compute_dtype", "seed", "data_seed"):
        value = f[key]
        out.append(_row(key, ", ".join(value) if isinstance(value, list) else value))
    out += [_row("source_max_len", d["source_max_len"]), _row("corpus_strategy", d["corpus_strategy"]),
            _row("device", m.get("device", "-")), ""]
    out += ["## Training", ""]
    losses = [x for x in facts.metrics if "loss" in x]
    evals = [x for x in facts.metrics if "eval_loss" in x]
    if losses:
        out.append(f"Train loss {losses[0]['loss']:.4g} → {losses[-1]['loss']:.4g} over {losses[-1]['step']} steps"
                   + (f"; eval loss {evals[-1]['eval_loss']:.4g} at step {evals[-1]['step']}." if evals else "."))
        if chart:
            out += ["", f"![loss curve]({chart})"]
    else:
        out.append("No training metrics were recorded.")
    out += ["", "## Evaluation", ""]
    ev = facts.evaluation
    if ev:
        out += [_row("model", "loss", "perplexity"), _row("---", "---:", "---:")]
        for name in ("base", "tuned"):
            if name in ev:
                out.append(_row(name, ev[name]["loss"], ev[name]["perplexity"]))
        out += ["", f"On {ev.get('rows')} eval rows ({ev.get('tokens')} tokens), device {ev.get('device')}."]
    else:
        out.append("No evaluation yet (`aitk evaluate`).")
    if files:
        out += ["", "## Files", ""] + [f"- `{p}`" for p in files]
    if m:
        out += ["", "## Provenance", "",
                "Packages: " + ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items() if v) + ".",
                f"Job {facts.finetune.id if facts.finetune else '-'}; the full Olive config is in its manifest.json."]
    return "\n".join(out) + "\n"


def write_report(facts: CardFacts, out_dir: Path) -> list[Path]:
    """README.md and loss.svg in `out_dir` (each written whole)."""
    svg = loss_svg(facts.metrics)
    written = [atomic_file.write_text(Path(out_dir) / CARD, card(facts, chart=LOSS_SVG if svg else None))]
    if svg:
        written.append(atomic_file.write_text(Path(out_dir) / LOSS_SVG, svg))
    return written
