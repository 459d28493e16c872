"""`aitk dataset check --report`: the data-quality findings, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from aitk.core import paths


def aitk(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bundled():
    lines = (paths.bundled_data() / "tiny_qa" / "train.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_report_finds_planted_duplicates_and_overlap(tmp_path):
    rows = bundled()[:120]
    planted = [*rows, dict(rows[4]),  # line 121: exact copy of line 5
               {"question": rows[7]["question"].upper() + "  ", "answer": rows[7]["answer"].rstrip(".")}]  # ~ line 8
    train = write(tmp_path / "train.jsonl", planted)
    evalf = write(tmp_path / "eval.jsonl", [rows[30], {"question": "A question nobody asked?", "answer": "None yet."}])
    report_file = tmp_path / "report.json"
    code, out, err = aitk("dataset", "check", str(train), "--eval", str(evalf), "--report",
                          "--template", "{question} {answer}", "--save", str(report_file))
    assert code == 0, (out, err)  # warnings only: the run is still worth doing
    assert "train.jsonl:5 = train.jsonl:121" in out
    assert "train.jsonl:8 ~ train.jsonl:122" in out
    assert "eval.jsonl:1 = train.jsonl:31" in out
    saved = json.loads(report_file.read_text())
    found = {f["code"]: f for f in saved["findings"]}
    assert found["duplicates"]["count"] == 1 and found["near-duplicates"]["count"] == 1
    assert found["contamination"]["count"] == 1 and found["contamination"]["details"]["eval_rows"] == 2
    assert "too-few-rows" not in found and saved["ok"] is True

    md = tmp_path / "report.md"
    assert aitk("dataset", "check", str(train), "--eval", str(evalf), "--report", "--template",
                "{question} {answer}", "--save", str(md))[0] == 0
    text = md.read_text()
    assert text.startswith("# Data quality report") and "`eval.jsonl:1 = train.jsonl:31`" in text


def test_report_refuses_a_ten_row_file(tmp_path):
    ten = write(tmp_path / "ten.jsonl", bundled()[:10])
    code, out, err = aitk("dataset", "check", str(ten), "--report", "--template", "{question} {answer}")
    assert code == 1, (out, err)
    assert "error: only 10 rows (fewer than 20)" in out and "Traceback" not in err


def test_report_in_a_project_uses_its_files_tokenizer_and_labels(tmp_path, tiny_test_model):
    from aitk.core import tiny
    from aitk.core.project import create_project, regenerate

    labels = [{"question": f"Is review {i} happy?", "answer": "yes" if i % 10 else "no"} for i in range(200)]
    labels[3]["answer"] = ""
    data = write(tmp_path / "labels.jsonl", labels)
    project = create_project(tmp_path / "proj", dataset=str(data), tiny_spec=tiny.TEST)
    project.settings.data.eval_dataset = "dataset/labels.jsonl"  # eval = train: all contaminated
    regenerate(project)
    code, out, err = aitk("dataset", "check", "--report", cwd=project.root)
    assert code == 1, (out, err)
    assert "tokens (" in out and "tokenizer)" in out  # counted with the project's own tokenizer
    assert "error: eval rows also in train (contamination) (200)" in out
    assert "label-like answers: 3 values, unbalanced" in out and "yes: 179 (90%)" in out
    assert "labels.jsonl:4" in out  # the empty answer, located
