"""Training metrics: emitted by a trainer callback as marked log lines, parsed back from any log.

One mechanism for every back end: a job's log (local pipe or a remote log stream) carries lines
`[aitk-metric] {json}`; whoever reads the log turns them into `metrics.jsonl` records with step,
epoch, loss, learning rate, eval loss, throughput and time.
"""

from __future__ import annotations

import json
import time

MARK = "[aitk-metric] "
KEYS = ("step", "max_steps", "epoch", "loss", "learning_rate", "eval_loss", "grad_norm",
        "samples_per_second", "event", "t")


def parse_line(line: str) -> dict | None:
    """The metric record in a log line, or None for any other line."""
    i = line.find(MARK)
    if i < 0:
        return None
    try:
        record = json.loads(line[i + len(MARK):])
    except ValueError:
        return None
    return {k: record[k] for k in KEYS if k in record} if isinstance(record, dict) else None


def format_line(record: dict) -> str:
    return MARK + json.dumps(record, separators=(",", ":"))


def make_callback(metrics_file: str | None = None):
    """A transformers TrainerCallback printing one metric line per log/eval event.

    With `metrics_file` it also appends each record there (the job's metrics.jsonl).
    Built lazily: transformers is only importable in job processes.
    """
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def __init__(self):
            self._last = None

        def _emit(self, state, **values):
            rec = {"step": state.global_step, "max_steps": state.max_steps,
                   "epoch": round(state.epoch or 0.0, 4), "t": round(time.time(), 3)}
            rec.update({k: v for k, v in values.items() if v is not None})
            print(format_line(rec), flush=True)
            if metrics_file:
                with open(metrics_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, separators=(",", ":")) + "\n")

        def on_train_begin(self, args, state, control, **kwargs):
            self._emit(state, event="begin")

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            picked = {k: _num(logs.get(k)) for k in
                      ("loss", "learning_rate", "eval_loss", "grad_norm", "train_samples_per_second")}
            if picked.pop("train_samples_per_second") is not None:
                return  # the end-of-training summary; `end` below reports it
            if any(v is not None for v in picked.values()):
                self._emit(state, **picked)

        def on_save(self, args, state, control, **kwargs):
            self._emit(state, event="checkpoint")

        def on_train_end(self, args, state, control, **kwargs):
            self._emit(state, event="end")

    return MetricsCallback()


def _num(v):
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def install_callback(metrics_file: str | None = None) -> None:
    """Make every Trainer built in this process report metrics and drop the tqdm bar.

    Olive constructs its Trainer internally; patching the class is the one way in without
    changing the Olive config the project also runs standalone.
    """
    import transformers
    from transformers.trainer_callback import ProgressCallback

    original = transformers.Trainer.__init__
    if getattr(original, "_aitk", False):
        return

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.remove_callback(ProgressCallback)
        self.add_callback(make_callback(metrics_file))

    __init__._aitk = True
    transformers.Trainer.__init__ = __init__
