"""`make bench`'s table and JSON come from the rows the benches emit (bench/results.py, bench/all.py).
Benches here are small scripts that report fixed figures: nothing is timed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import all as runner  # noqa: E402
from results import Row, table  # noqa: E402

REPORTS = """
import sys
sys.path.insert(0, {bench!r})
from results import Row, emit
emit(Row("fake", "ratio at tiny", 0.97, ">= 0.95", unit="x"),
     Row("fake", "ratio at 0.5B", 1.3, "<= 1.1", "qwen2.5-0.5b", "x", "4 steps"),
     Row("fake", "memory / formula", 1.1, "0.75..1.25"), Row("fake", "speed", 42.0, unit="tok/s"))
print("the bench's own printout")
sys.exit(1)  # a bench may exit non-zero when its goal is not met: its rows still count
"""


def test_goals_are_judged_from_the_rows():
    assert Row("b", "f", 0.97, ">= 0.95").met is True
    assert Row("b", "f", 1.3, "<= 1.1").met is False
    assert Row("b", "f", 0.7, "0.75..1.25").met is False and Row("b", "f", 1.0, "0.75..1.25").met is True
    assert Row("b", "f", 5.0).met is None and Row("b", "f", None, ">= 1").met is None


def test_the_runner_collects_every_benchs_rows_into_one_table_and_json(tmp_path, monkeypatch):
    (tmp_path / "reports.py").write_text(REPORTS.format(bench=str(BENCH)))
    (tmp_path / "crashes.py").write_text("raise SystemExit('no model here')\n")
    monkeypatch.setattr(runner, "HERE", tmp_path)
    plan = [runner.Bench("fake", ["reports.py"]), runner.Bench("broken", ["crashes.py"], shape="qwen2.5-0.5b")]
    out = tmp_path / "out" / "results.json"
    rows = runner.run(plan, out)
    data = json.loads(out.read_text())
    assert [(r["bench"], r["figure"], r["value"], r["met"]) for r in data["rows"]] == [
        ("fake", "ratio at tiny", 0.97, True), ("fake", "ratio at 0.5B", 1.3, False),
        ("fake", "memory / formula", 1.1, True), ("fake", "speed", 42.0, None),
        ("broken", "(no figure)", None, None)]
    assert data["rows"][1]["shape"] == "qwen2.5-0.5b" and data["rows"][1]["note"] == "4 steps"
    assert [(b["bench"], b["exit"], b["rows"]) for b in data["benches"]] == [("fake", 1, 4), ("broken", 1, 1)]
    assert data["machine"]["cpus"] >= 1 and len(data["machine"]["load_average"]) == 3
    log = out.with_suffix(".log").read_text()
    assert "the bench's own printout" in log and "no model here" in log
    assert "exit 1" in rows[-1].note and "results.log" in rows[-1].note

    text = table(rows).splitlines()
    assert text[0].split() == ["bench", "shape", "figure", "value", "goal", "met"]
    body = {line.split("  ")[0].strip() + "|" + line.split("  ")[1].strip(): line for line in text[2:-1]}
    assert len(text) == 2 + len(rows) + 1 and text[-1] == "2 of 3 goals met"
    line = next(line for line in text if "ratio at 0.5B (4 steps)" in line)
    assert "qwen2.5-0.5b" in line and "1.3 x" in line and "<= 1.1" in line and line.rstrip().endswith("NOT met")
    assert next(line for line in text if "ratio at tiny" in line).rstrip().endswith("met")
    assert next(line for line in text if "speed" in line).split()[-3:] == ["tok/s", "-", "-"]
    assert any(key.startswith("broken|qwen2.5-0.5b") for key in body)


def test_a_quick_run_leaves_out_the_real_scale_benches_and_every_bench_has_quick_arguments():
    quick = [b for b in runner.PLAN if b.quick is not None]
    # A quick run of a real-scale bench cuts it to a few small layers.
    assert quick and all(b.shape == "tiny" or b.name in ("merged_decode", "int4_choice", "decode_bandwidth")
                         for b in quick)
    assert {b.name for b in runner.PLAN if b.shape != "tiny"} >= {"serve", "finetune_overhead", "merged_decode",
                                                                  "rehearse", "int4_choice", "decode_bandwidth"}
    assert {b.shape for b in runner.PLAN if b.name == "rehearse"} == {"qwen2.5-0.5b", "qwen2.5-1.5b"}
    for bench in runner.PLAN:
        assert (BENCH / bench.argv[0]).is_file()


@pytest.mark.parametrize("value, shown", [(0.9731, "0.973 x"), (31.27, "31.3 x"), (12345.6, "12,346 x")])
def test_values_are_shown_to_three_figures(value, shown):
    assert shown in table([Row("b", "f", value, unit="x")])
