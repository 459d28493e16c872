"""Parity: the exported, merged and served model answers like the trained one, and a format that
differs (an export's chat template, its genai_config eos id) fails the check with the finding named.

The pass test reads the check the `trained` fixture's export job ran by itself (parity is the last
step of every export); the mismatch tests break a copy of that project and run `aitk evaluate
--parity` through the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aitk.core import parity, publish
from aitk.core.jobs import JobStore


def aitk(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "aitk.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    return proc.returncode, proc.stdout, proc.stderr


def broken_copy(trained, tmp_path: Path, name: str) -> Path:
    project, _, _ = trained
    copy = tmp_path / name
    shutil.copytree(project.root, copy, symlinks=True)  # copy2 keeps mtimes: the export stays current
    shutil.rmtree(copy / parity.RECORD_DIR, ignore_errors=True)
    return copy


@pytest.mark.slow
def test_parity_passes_after_every_export(trained):
    project, _, export_job = trained
    store = JobStore()
    record = parity.read_record(parity.record_path(project.root, "fp32"))
    assert record is not None, store.log_path(export_job.id).read_text()[-3000:]
    assert record["passed"], parity.summary_lines(record)
    forms = {(c["form"], c["against"]): c for c in record["comparisons"]}
    # fp32 is the trained precision: every form must answer exactly as the PyTorch model + adapter.
    for form in ("torch-chat", "onnx", "serve"):
        c = forms[(form, "torch")]
        assert c["required"] and c["agree"] == c["total"] == record["prompts"] > 0, c
    assert forms[("merged", "torch")]["skipped"]  # the fixture exports the adapter form only
    assert record["findings"] == []
    assert record["stops"]["training"] and record["end_token"] == "<|end|>"
    # The job that exported checked it: its result says so, and the newest export's job holds its
    # own copy of the record (other tests export this shared project again, which checks again).
    assert store.get(export_job.id).result["parity"]["passed"] is True
    newest = max((r for r in store.list(project=str(project.root)) if r.kind == "export" and r.status == "succeeded"),
                 key=lambda r: r.created)
    assert parity.read_record(store.job_dir(newest.id) / parity.JOB_RECORD)["checked"] == record["checked"]
    assert parity.mark(project.root, "fp32").state == parity.PASSED
    assert parity.job_mark(store.job_dir(newest.id)).state == parity.PASSED
    # ...and the project index carries the mark for every front end.
    from aitk.core.project_index import read_entry

    assert read_entry(project.root).parity.state == parity.PASSED


@pytest.mark.slow
def test_parity_catches_a_mismatched_export_chat_template(trained, tmp_path):
    copy = broken_copy(trained, tmp_path, "bad-template")
    template = copy / "models" / "onnx" / "fp32" / "chat_template.jinja"
    text = template.read_text()
    broken = text.replace("'<|user|>\n' + message['content'] + '<|end|>\n'", "'<|user|>' + message['content'] + '\n'")
    assert broken != text
    template.write_text(broken)

    code, out, err = aitk("evaluate", "--parity", "-P", str(copy))
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert "parity fp32: failed" in out and "chat template: export fp32" in out, out
    record = parity.read_record(parity.record_path(copy, "fp32"))
    assert not record["passed"]
    names = {f["name"] for f in record["findings"]}
    assert names == {"chat template: export fp32"}, record["findings"]
    forms = {(c["form"], c["against"]): c for c in record["comparisons"]}
    assert forms[("torch-chat", "torch")]["agree"] == record["prompts"]  # the training side is untouched
    onnx = forms[("onnx", "torch")]
    assert onnx["agree"] < onnx["total"]
    first = onnx["first_divergence"]
    assert first["prompt"] and first["expected"] != first["got"]
    assert f"expected {first['expected']!r}" in out and f"got      {first['got']!r}" in out
    mark = parity.mark(copy, "fp32")
    assert mark.state == parity.FAILED and mark.divergence["form"] == "onnx"
    assert "chat template: export fp32" in mark.summary


@pytest.mark.slow
def test_parity_names_an_export_that_does_not_stop_on_the_training_end_token(trained, tmp_path):
    copy = broken_copy(trained, tmp_path, "bad-eos")
    config_path = copy / "models" / "onnx" / "fp32" / "genai_config.json"
    config = json.loads(config_path.read_text())
    end_id = 4  # <|end|> in the tiny tokenizer: every training sample ends with it
    assert end_id in config["model"]["eos_token_id"]
    config["model"]["eos_token_id"] = [i for i in config["model"]["eos_token_id"] if i != end_id]
    config_path.write_text(json.dumps(config))

    code, out, err = aitk("evaluate", "--parity", "-P", str(copy))
    assert code == 1, (out, err)
    record = parity.read_record(parity.record_path(copy, "fp32"))
    names = {f["name"] for f in record["findings"]}
    assert {"eos: genai_config.json fp32", "eos: aitk serve"} <= names, record["findings"]
    assert "'<|end|>' (4)" in next(f["message"] for f in record["findings"] if f["name"] == "eos: aitk serve")


def test_marks_not_checked_passed_failed_and_stale(tmp_path):
    """The mark the index gives from a record and the export stamps now (no model needed)."""
    root = tmp_path / "p"
    export = root / "models" / "onnx" / "fp32"
    export.mkdir(parents=True)
    (export / "genai_config.json").write_text("{}")
    (export / publish.STAMP).write_text(json.dumps({"version": "v1", "adapter": None}))
    assert parity.mark(root, "fp32").state == parity.NOT_CHECKED

    record = {"schema": parity.SCHEMA, "precision": "fp32", "root": str(root), "passed": False, "prompts": 2,
              "max_new_tokens": 16, "exports": {"fp32": "v1", "fp32-merged": None}, "verdict": "onnx vs torch",
              "comparisons": [{"form": "onnx", "against": "torch", "required": True, "agree": 1, "total": 2,
                               "first_divergence": {"row": 1, "prompt": "Q?", "expected": "A.", "got": "B."}}],
              "findings": []}
    path = parity.record_path(root, "fp32")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    failed = parity.mark(root, "fp32", stale_exports=set())
    assert failed.state == parity.FAILED and failed.divergence["got"] == "B."
    assert failed.summary == "failed (fp32): onnx vs torch 1/2"
    path.write_text(json.dumps({**record, "passed": True}))
    assert parity.mark(root, "fp32", stale_exports=set()).state == parity.PASSED
    # A new export (another version stamp) after the check: stale, whatever the check said.
    (export / publish.STAMP).write_text(json.dumps({"version": "v2", "adapter": None, "t": time.time()}))
    stale = parity.mark(root, "fp32", stale_exports=set())
    assert stale.state == parity.STALE and "export changed" in stale.reason
    # A merged export appearing later changes what `aitk serve` answers from: stale too.
    path.write_text(json.dumps({**record, "exports": {"fp32": "v2", "fp32-merged": None}}))
    merged = root / "models" / "onnx" / "fp32-merged"
    merged.mkdir()
    (merged / "genai_config.json").write_text("{}")
    (merged / publish.STAMP).write_text(json.dumps({"version": "m1"}))
    assert parity.mark(root, "fp32", stale_exports=set()).state == parity.STALE
