"""`aitk demo`: the whole pipeline, headless, on the embedded tiny model, step by step with timings.

Build the model -> write a project with the bundled dataset -> fine-tune with Olive (a real job)
-> export to ONNX with the adapter as its own file (a child job) -> ask base and tuned model the
same held training questions on one loaded model -> print both answers and the score.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..core import paths, tiny


class Steps:
    def __init__(self, out=sys.stdout):
        self.out = out
        self.t0 = time.perf_counter()
        self.n = 0

    def start(self, title: str) -> float:
        self.n += 1
        print(f"\n[{self.n}] {title}", file=self.out, flush=True)
        return time.perf_counter()

    def done(self, t: float, detail: str = "") -> None:
        print(f"    done in {time.perf_counter() - t:.1f} s{'  ' + detail if detail else ''}", file=self.out,
              flush=True)


def held_questions(n: int) -> list[dict]:
    with open(paths.bundled_data() / "tiny_qa" / "train.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows[:n]


def score(engine, rows: list[dict], adapter: str) -> tuple[int, list[str]]:
    from ..core.chat import GenerationOptions

    answers = []
    for row in rows:
        stream = engine.stream([{"role": "user", "content": row["question"]}],
                               GenerationOptions(max_new_tokens=16), adapter=adapter)
        answers.append(stream.read().strip())
    return sum(a == r["answer"] for a, r in zip(answers, rows)), answers


def run_demo(keep: bool = False, questions: int = 16, out=sys.stdout) -> int:
    from ..core.chat import GenaiChatEngine
    from ..core.project import create_project
    from ..providers.jobs import Jobs

    steps = Steps(out)
    print("aitk demo: fine-tune, export and chat on the embedded tiny Phi-3, offline", file=out)

    t = steps.start("Build the tiny model (Phi-3 architecture, local BPE tokenizer, seeded)")
    reused = tiny.is_built()
    model = tiny.ensure_tiny()
    steps.done(t, f"{'reused' if reused else 'built'} {model}")

    t = steps.start("Write a project with the bundled dataset")
    parent = paths.projects_dir() if keep else Path(tempfile.mkdtemp(prefix="aitk-demo-"))
    project = create_project(parent / time.strftime("demo-%Y%m%d-%H%M%S"))
    s = project.settings
    rows = sum(1 for _ in open(project.path(s.data.dataset), encoding="utf-8"))
    steps.done(t, f"{project.root}: {rows} training rows, LoRA r={s.finetune.lora_r}, {s.finetune.max_steps} steps")

    jobs = Jobs()  # the facade: the same calls the app and `aitk finetune` make
    try:
        t = steps.start(f"Fine-tune with Olive ({s.finetune.method.upper()}, {project.device()}) — job")
        ft, export = jobs.start_training(project.root, then_evaluate=False)
        _follow_progress(jobs, ft.id, out)
        rec = jobs.status(ft.id)
        if rec.status != "succeeded":
            print(f"    fine-tune {rec.status}: {rec.error} (log: {jobs.store.log_path(ft.id)})", file=out)
            return 1
        losses = [m for m in jobs.store.metrics(ft.id) if "loss" in m]
        steps.done(t, f"loss {losses[0]['loss']:.3f} -> {losses[-1]['loss']:.3f}" if losses else "")

        t = steps.start(f"Export to ONNX ({s.inference.precision}) with the adapter as its own file, then check "
                        "parity — child job")
        while not (rec := jobs.status(export.id)).is_final:
            time.sleep(0.1)
        if rec.status != "succeeded":
            print(f"    export {rec.status}: {rec.error} (log: {jobs.store.log_path(export.id)})", file=out)
            return 1
        onnx = project.onnx_dir()
        adapter_file = onnx / "adapters" / f"{ft.id}.onnx_adapter"  # the adapter is named by its job
        from ..core import parity

        steps.done(t, f"{onnx.name}/model.onnx + adapters/{adapter_file.name} ({adapter_file.stat().st_size // 1024} KiB)"
                   f"; parity {parity.mark(project.root, s.inference.precision).summary}")

        t = steps.start(f"Ask base and tuned the same {questions} held training questions (one loaded model)")
        engine = GenaiChatEngine(onnx)
        held = held_questions(questions)
        base_ok, base_answers = score(engine, held, "base")
        tuned_ok, tuned_answers = score(engine, held, "tuned")
        steps.done(t)
        width = max(len(r["question"]) for r in held)
        print(f"\n    {'question':{width}}  {'expected':12} {'base':18} tuned", file=out)
        for r, b, a in zip(held, base_answers, tuned_answers):
            mark = "✓" if a == r["answer"] else "✗"
            print(f"    {r['question']:{width}}  {_pad(r['answer'], 12)} {_pad(_short(b), 18)} {_short(a)} {mark}",
                  file=out)
        total = time.perf_counter() - steps.t0
        print(f"\nscore: tuned {tuned_ok}/{len(held)}, base {base_ok}/{len(held)}   (total {total:.1f} s)", file=out)
        if keep:
            print(f"project kept at {project.root} — try: aitk chat -P {project.root}", file=out)
        return 0 if tuned_ok > base_ok and tuned_ok * 2 >= len(held) else 1
    finally:
        if not keep:
            shutil.rmtree(parent, ignore_errors=True)


def _short(text: str, n: int = 16) -> str:
    """One line of at most `n` cells; an answer of only punctuation is quoted (a bare "." in a
    column reads as layout, not as what the model said)."""
    from rich.cells import cell_len, set_cell_size

    text = " ".join(text.split()) or "(nothing)"
    if not any(c.isalnum() for c in text) and text != "(nothing)":
        text = f'"{text}"'
    return text if cell_len(text) <= n else set_cell_size(text, n - 1) + "…"


def _pad(text: str, width: int) -> str:
    """Padded to `width` terminal cells (a wide or combining character counts as it shows)."""
    from rich.cells import cell_len

    return text + " " * max(0, width - cell_len(text))


def _follow_progress(jobs, job_id: str, out) -> None:
    """Print loss every tenth of the run while the job runs."""
    from ..core import follow, metrics

    path = jobs.store.log_path(job_id)
    last_tenth = -1
    for lines in follow.follow(path, 0, done=lambda: jobs.status(job_id).is_final, poll=0.1):
        for line in lines:
            rec = metrics.parse_line(line)
            if rec and "loss" in rec and rec.get("max_steps"):
                tenth = rec["step"] * 10 // rec["max_steps"]
                if tenth > last_tenth:
                    last_tenth = tenth
                    print(f"    step {rec['step']:>5}/{rec['max_steps']}  loss {rec['loss']:.3f}", file=out,
                          flush=True)
            elif rec and "eval_loss" in rec:
                print(f"    step {rec['step']:>5}  eval loss {rec['eval_loss']:.3f}", file=out, flush=True)


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the embedded tiny model and score it")
    p.add_argument("--keep", action="store_true", help="keep the demo project (printed at the end)")
    p.add_argument("--questions", type=int, default=16, help="held training questions to ask (default 16)")
    p.set_defaults(func=lambda args: run_demo(keep=args.keep, questions=args.questions))
