"""aitk.core.datasets: every broken file gives a located issue; good files load and render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aitk.core import datasets as ds
from aitk.core import paths, tiny
from aitk.core import text_template as grammar
from aitk.core.errors import AitkError

TEMPLATE = "<|user|>\n{question}<|end|>\n<|assistant|>\n{answer}<|end|>"
QA = {"question": "Q?", "answer": "A."}


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def only(report: ds.DatasetReport) -> ds.DatasetIssue:
    assert len(report.issues) == 1, report.format()
    return report.issues[0]


# --- Good data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train.jsonl", "eval.jsonl"])
def test_bundled_dataset_is_clean(split):
    source = paths.bundled_data() / "tiny_qa" / split
    report = ds.check_dataset(source, text_template=TEMPLATE)
    assert report.ok, report.format()
    assert report.columns == ["question", "answer"]
    assert report.rows == len(source.read_text().splitlines())
    assert "ok" in report.format()


def test_bundled_dataset_loads():
    data = ds.load_rows(paths.bundled_data() / "tiny_qa" / "train.jsonl", max_rows=7)
    assert data.kind == "jsonl" and len(data) == 7 and data.columns == ["question", "answer"]


def test_json_array_loads_and_keeps_line_numbers(tmp_path):
    text = '[\n  {"question": "a", "answer": "b"},\n  {"question": "c", "answer": "d"},\n  {"question": "e"}\n]\n'
    path = write(tmp_path, "d.json", text)
    data = ds.load_rows(path)
    assert data.kind == "json" and [r["question"] for r in data.rows] == ["a", "c", "e"]
    issue = only(ds.check_dataset(path, text_template=TEMPLATE))
    assert (issue.line, issue.column) == (4, "answer")
    assert ds.load_rows(path, max_rows=2).rows[-1]["question"] == "c"


def test_empty_json_array_has_no_rows(tmp_path):
    issue = only(ds.check_dataset(write(tmp_path, "d.json", " [ ] ")))
    assert issue.message == "no rows"


def test_json_file_holding_json_lines_is_detected(tmp_path):
    data = ds.load_rows(write(tmp_path, "d.json", jsonl(QA, QA)))
    assert data.kind == "json" and data.rows == [QA, QA]


def test_broken_json_array_points_at_the_line(tmp_path):
    path = write(tmp_path, "d.json", '[\n{"a": 1},\n{"a": 2}\n{"a": 3}\n]')
    issue = only(ds.check_dataset(path))  # where the comma was expected, as json itself says
    assert issue.line == 4 and issue.message == "invalid JSON (Expecting ',' delimiter: column 1)"
    path = write(tmp_path, "e.json", '[{"a": 1}]\n[{"a": 2}]')
    assert only(ds.check_dataset(path)).line == 2


def test_csv_loads_with_header_columns(tmp_path):
    path = write(tmp_path, "d.csv", 'question,answer\n"Hi, there?",Yes\nQ2,"two\nlines"\n')
    data = ds.load_rows(path)
    assert data.kind == "csv" and data.columns == ["question", "answer"]
    assert data.rows == [{"question": "Hi, there?", "answer": "Yes"}, {"question": "Q2", "answer": "two\nlines"}]


def test_csv_semicolon_export_loads(tmp_path):
    data = ds.load_rows(write(tmp_path, "d.csv", "question;answer\nQ, really?;A\n"))
    assert data.rows == [{"question": "Q, really?", "answer": "A"}]


def test_parquet_loads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": f"q{i}", "answer": f"a{i}"} for i in range(4)]), path)
    data = ds.load_rows(path)
    assert data.kind == "parquet" and data.columns == ["question", "answer"] and len(data) == 4
    assert len(ds.load_rows(path, max_rows=2)) == 2
    assert ds.check_dataset(path, text_template=TEMPLATE).ok
    issue = only(ds.check_dataset(path, text_template="{question} {context}"))
    assert issue.column == "context"


def test_parquet_empty_value_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([QA, {"question": "q", "answer": None}]), path)
    issue = only(ds.check_dataset(path, text_template=TEMPLATE))
    assert issue.line is None and issue.column == "answer" and "row 2" in issue.message


def test_corrupt_parquet_is_an_issue(tmp_path):
    issue = only(ds.check_dataset(write(tmp_path, "d.parquet", b"PAR1 not really")))
    assert "Parquet" in issue.message
    with pytest.raises(ds.DatasetError):
        ds.load_rows(tmp_path / "d.parquet")


# --- Broken files --------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    issue = only(ds.check_dataset(tmp_path / "nope.jsonl"))
    assert issue.message == "file not found" and issue.hint
    with pytest.raises(ds.DatasetError, match="file not found"):
        ds.load_rows(str(tmp_path / "nope.jsonl"))


def test_folder_and_unknown_extension(tmp_path):
    assert "folder" in only(ds.check_dataset(tmp_path)).message
    assert "unsupported file type '.txt'" in only(ds.check_dataset(write(tmp_path, "d.txt", "x"))).message


@pytest.mark.parametrize("content", [b"", b"\n \n\t\n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path, "d.jsonl", content)
    assert "empty" in only(ds.check_dataset(path)).message
    with pytest.raises(ds.DatasetError, match="empty"):
        ds.load_rows(path)


def test_bad_json_line_has_file_line_and_json_error(tmp_path):
    path = write(tmp_path, "train.jsonl", jsonl(QA, QA, '{"question": "c" "answer": "d"}', QA))
    issue = only(ds.check_dataset(path, text_template=TEMPLATE))
    assert issue.line == 3
    assert issue.message == "invalid JSON (Expecting ',' delimiter: column 18)"
    with pytest.raises(ds.DatasetError) as err:
        ds.load_rows(path)
    assert err.value.message == f"{path}:3: invalid JSON (Expecting ',' delimiter: column 18)"
    assert err.value.hint and isinstance(err.value, AitkError)
    assert [i.line for i in err.value.issues] == [3]


def test_json_array_in_jsonl_file_gets_a_hint(tmp_path):
    path = write(tmp_path, "d.jsonl", "[\n" + json.dumps(QA) + "\n]\n")
    issues = ds.check_dataset(path).issues
    assert issues[0].line == 1 and ".json" in issues[0].hint


def test_non_utf8_bytes_give_line_and_byte_offset(tmp_path):
    first = jsonl(QA).encode()
    path = write(tmp_path, "d.jsonl", first + b'{"question": "caf\xe9", "answer": "x"}\n' + jsonl(QA).encode())
    issue = only(ds.check_dataset(path, text_template=TEMPLATE))
    assert issue.line == 2 and "0xe9" in issue.message
    assert f"byte offset {len(first) + 17}" in issue.message and "UTF-8" in issue.hint
    with pytest.raises(ds.DatasetError, match="not valid UTF-8"):
        ds.load_rows(path)


def test_utf8_bom_is_accepted(tmp_path):
    assert ds.load_rows(write(tmp_path, "d.jsonl", b"\xef\xbb\xbf" + jsonl(QA).encode())).rows == [QA]


def test_rows_that_are_not_objects(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl(QA, [1, 2], '"text"', 3, None))
    issues = ds.check_dataset(path).issues
    assert [i.line for i in issues] == [2, 3, 4, 5]
    assert "an array" in issues[0].message and "a string" in issues[1].message
    assert "null" in issues[3].message
    with pytest.raises(ds.DatasetError, match="not a JSON object"):
        ds.load_rows(path)


def test_missing_column_lists_first_rows_and_counts(tmp_path):
    rows = [QA] + [{"question": "only"}] * 8 + [QA]
    path = write(tmp_path, "d.jsonl", jsonl(*rows))
    report = ds.check_dataset(path, text_template=TEMPLATE)
    located = [i for i in report.issues if i.line is not None]
    assert [i.line for i in located] == [2, 3, 4, 5, 6]
    assert {i.column for i in report.issues} == {"answer"}
    assert "8 rows missing column 'answer' in total" in report.issues[-1].message
    # Column problems are for check_dataset: the rows still load.
    assert len(ds.load_rows(path)) == 10


def test_empty_values_are_located(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl(QA, {"question": "", "answer": "a"}, QA, {"question": "q", "answer": "  "}))
    report = ds.check_dataset(path, text_template=TEMPLATE)
    assert [(i.line, i.column) for i in report.issues] == [(2, "question"), (4, "answer")]
    assert all("empty" in i.message for i in report.issues)


def test_template_field_not_a_column_names_field_and_columns(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl(QA, QA))
    issue = only(ds.check_dataset(path, text_template="{question} {context} {answer}"))
    assert issue.column == "context" and issue.line is None
    assert "{context}" in issue.message and "columns: question, answer" in issue.message


def test_text_columns_are_required(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl({"text": "a"}, {"text": ""}, {"other": 1}))
    report = ds.check_dataset(path, text_columns=["text", "missing"])
    found = [(i.line, i.column) for i in report.issues]
    assert found == [(None, "missing"), (2, "text"), (3, "text")]


def test_malformed_template_is_an_issue_not_an_exception(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl(QA))
    issue = only(ds.check_dataset(path, text_template="{question"))
    assert "malformed text template" in issue.message


def test_csv_ragged_rows_are_located(tmp_path):
    text = 'question,answer\nq1,a1\n"multi\nline",a2\nq3,a3,extra\nq4\n'
    path = write(tmp_path, "d.csv", text)
    report = ds.check_dataset(path, text_template=TEMPLATE)
    assert [(i.line, i.message) for i in report.issues] == [
        (5, "3 fields, but the header has 2"),
        (6, "1 fields, but the header has 2"),
    ]
    with pytest.raises(ds.DatasetError, match=r"d\.csv:5: 3 fields"):
        ds.load_rows(path)


def test_csv_duplicate_header(tmp_path):
    issue = only(ds.check_dataset(write(tmp_path, "d.csv", "a,a\n1,2\n")))
    assert issue.line == 1 and issue.column == "a"


def test_report_format_is_one_line_per_issue_plus_hint(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl(QA, {"question": "q"}))
    text = ds.check_dataset(path, text_template=TEMPLATE).format()
    lines = text.splitlines()
    assert lines[0] == f"{path}:2: answer: missing from this row"
    assert lines[1].startswith("    ") and lines[-1] == f"{path}: 1 issue (2 rows read)"


# --- Hugging Face --------------------------------------------------------------------------------


def test_hf_load_failure_is_an_aitk_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(AitkError) as err:
        ds.load_rows("someone/qa-set")
    assert "someone/qa-set" in err.value.message and "Couldn't reach the Hub" in err.value.message
    assert "HF_DATASETS_OFFLINE" in err.value.hint and "HF_TOKEN" in err.value.hint
    assert not ds.check_dataset("someone/qa-set").ok


def test_hf_id_config_and_max_rows_reach_load_dataset(monkeypatch):
    import datasets

    calls = []

    class Fake:
        column_names = ["question", "answer"]

        def to_list(self):
            return [QA, QA]

    def fake(name, config, split):
        calls.append((name, config, split))
        return Fake()

    monkeypatch.setattr(datasets, "load_dataset", fake)
    data = ds.load_rows("someone/qa-set:small", split="test", max_rows=2)
    assert data.kind == "hf" and data.rows == [QA, QA] and data.columns == ["question", "answer"]
    assert calls == [("someone/qa-set", "small", "test[:2]")]
    ds.load_rows("squad")
    assert calls[-1] == ("squad", None, "train")


# --- Templates -----------------------------------------------------------------------------------


def test_template_fields():
    assert grammar.fields(TEMPLATE) == ["question", "answer"]
    assert grammar.fields("{a} {{literal}} {b} {a}") == ["a", "b"]
    for bad in ["{question", "answer}", "{}", "{0}", "{q:%}", "{q!x}", "{q!r}", "{q.text}", "{q[0]}",
                "{q:>999999999}", "{q:{w}}"]:
        with pytest.raises(AitkError):
            grammar.fields(bad)


def test_render_is_str_format_and_keeps_braces_in_values():
    row = {"question": "What is {x}?", "answer": "{0} and }{", "n": 3, "none": None}
    template = "Q: {question} A: {answer} {{n}}={n}{none}"
    assert grammar.render(template, row) == template.format(**row) == "Q: What is {x}? A: {0} and }{ {n}=3None"
    with pytest.raises(AitkError, match="no column 'context'"):
        grammar.render("{context}", row)


def test_preview_renders_first_rows():
    source = paths.bundled_data() / "tiny_qa" / "train.jsonl"
    shown = ds.preview(source, TEMPLATE, n=3)
    first = json.loads(source.read_text().splitlines()[0])
    assert len(shown) == 3 and shown[0] == TEMPLATE.format(**first)


def test_render_chat_matches_text_template():
    assert ds.render_chat(QA, tiny.CHAT_TEMPLATE, "question", "answer") == grammar.render(TEMPLATE, QA) + "\n"
    with_system = ds.render_chat(QA, tiny.CHAT_TEMPLATE, "question", "answer", system_prompt="Be brief.")
    assert with_system.startswith("<|system|>\nBe brief.<|end|>\n<|user|>\nQ?")


def test_render_chat_errors_are_aitk_errors():
    with pytest.raises(AitkError, match="no column 'prompt'"):
        ds.render_chat(QA, tiny.CHAT_TEMPLATE, "prompt", "answer")
    with pytest.raises(AitkError, match="nope"):
        ds.render_chat(QA, "{{ raise_exception('nope') }}", "question", "answer")
    with pytest.raises(AitkError, match="does not compile"):
        ds.render_chat(QA, "{% for %}", "question", "answer")


def test_load_chat_template(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": tiny.CHAT_TEMPLATE}))
    assert ds.load_chat_template(tmp_path) == tiny.CHAT_TEMPLATE
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert ds.load_chat_template(tmp_path) == "{{ messages[0]['content'] }}"
    with pytest.raises(AitkError, match="no chat template"):
        ds.load_chat_template(tmp_path / "empty")


# --- Token lengths -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "d": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


TEXTS = ["a", "a b", "a b c", "a b c d", " ".join("a" * 10)]  # 1, 2, 3, 4, 10 tokens


def test_token_stats_numbers(word_tokenizer):
    stats = ds.token_stats(TEXTS, word_tokenizer, max_length=3)
    assert stats.lengths == [1, 2, 3, 4, 10]
    assert (stats.count, stats.min, stats.max, stats.mean) == (5, 1, 10, 4.0)
    assert (stats.p50, stats.p95, stats.over_limit, stats.max_length) == (3, 10, 2, 3)
    assert stats.histogram(bins=3) == [(1, 5, 4), (5, 9, 0), (9, 13, 1)]
    assert sum(c for _, _, c in stats.histogram()) == 5
    assert ds.token_stats([], word_tokenizer, 8).histogram() == []


def test_token_stats_ignores_truncation_without_changing_tokenizer(word_tokenizer, tmp_path):
    word_tokenizer.save(str(tmp_path / "tokenizer.json"))
    tok = ds.load_tokenizer(tmp_path)
    tok.enable_truncation(2)
    assert ds.token_stats(TEXTS, tok, 2).max == 10
    assert tok.truncation["max_length"] == 2
    with pytest.raises(AitkError, match="no tokenizer"):
        ds.load_tokenizer(tmp_path / "missing")


# --- Fuzzing -------------------------------------------------------------------------------------

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _never_crashes(path: Path) -> None:
    report = ds.check_dataset(path, text_template=TEMPLATE)
    assert isinstance(report.format(), str)
    try:
        ds.load_rows(path)
    except ds.DatasetError as err:
        assert err.issues
    else:
        assert not any(i.line is not None and "JSON" in i.message for i in report.issues)


@FUZZ
@given(content=st.binary(max_size=200), ext=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_fuzz_arbitrary_bytes(fuzz_dir, content, ext):
    _never_crashes(write(fuzz_dir, "bytes" + ext, content))


@FUZZ
@given(lines=st.lists(st.text(max_size=40), max_size=8), ext=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_fuzz_arbitrary_text_lines(fuzz_dir, lines, ext):
    _never_crashes(write(fuzz_dir, "text" + ext, "\n".join(lines)))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(*ds.INT64) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(rows=st.lists(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), min_size=1, max_size=5))
def test_fuzz_rows_round_trip(fuzz_dir, rows):
    keys = list(dict.fromkeys(k for row in rows for k in row))
    path = write(fuzz_dir, "rows.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    data = ds.load_rows(path)
    assert data.rows == rows and data.columns == keys
    array = write(fuzz_dir, "rows.json", json.dumps(rows, indent=1, ensure_ascii=False))
    assert ds.load_rows(array).rows == rows
