"""Data quality before training: what makes a run learn the wrong thing, or nothing, while the
data is still valid (datasets.check_dataset says whether training can read it at all).

Findings, each with a count, examples as `file:line` and what to do:
- exact duplicates: rows whose training text (the template rendered) is identical;
- near duplicates: the same text after normalisation (Unicode NFKC, case folded, punctuation
  dropped, whitespace collapsed), or a word-3-gram Jaccard similarity of at least NEAR_JACCARD,
  found with MinHash (64 hashes, 16 bands of 4, candidates verified exactly), so 10k rows take
  well under a second instead of 50M pair comparisons;
- contamination: eval rows that are (near) duplicates of a train row, so eval loss measures recall;
- too few rows (below TOO_FEW, and a warning below FEW), and with the `join` strategy fewer
  max-length blocks than one batch;
- empty or very short answers (the answer is the template's last field: what the model learns
  to write after the prompt);
- length outliers: rows over the project's max length (cut in training) and far above the
  median, counted in tokens with the project's tokenizer when the model folder is local, else
  with a stated character heuristic;
- label balance, when the answers look like labels (few distinct values).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import text_template
from .datasets import load_rows, load_tokenizer, token_stats

# AI Toolkit trains "successfully" on 10-15 rows and learns nothing: with its `join` strategy and
# 1024-token blocks such a file is under one block, and even line-by-line it is one or two
# optimizer steps an epoch. Under 20 rows no setting gives a useful LoRA; under 100 it memorises.
TOO_FEW = 20
FEW = 100
NEAR_JACCARD = 0.8
SHORT_ANSWER_CHARS = 2  # an answer this short (normalised) is noise unless the answers are labels
OUTLIER_TIMES_MEDIAN = 8
CHARS_PER_TOKEN = 4  # English BPE averages ~4 characters a token; used when no tokenizer is local
LABELS_MAX_DISTINCT = 20
MAX_EXAMPLES = 5
_HASHES, _BANDS = 64, 16
_PUNCT = re.compile(r"[^\w\s]+", re.UNICODE)
_SPACE = re.compile(r"\s+")
SEVERITIES = ("error", "warning", "info")


@dataclass
class Finding:
    code: str
    severity: str  # error: the run will not be useful; warning: it will learn less or mislead; info
    title: str
    count: int
    advice: str
    examples: list[str] = field(default_factory=list)  # "file:line: excerpt"
    details: dict = field(default_factory=dict)


@dataclass
class QualityReport:
    train: str
    eval: str | None
    rows: int
    eval_rows: int | None
    answer_column: str | None
    length_unit: str  # how lengths were counted, said in the report
    max_length: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No finding that makes the run useless."""
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def summary(self) -> str:
        counts = Counter(f.severity for f in self.findings)
        said = ", ".join(f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in SEVERITIES if counts[s])
        return said or "nothing found"

    def to_markdown(self) -> str:
        out = ["# Data quality report", "",
               f"- train: `{self.train}` ({self.rows} rows)"]
        if self.eval:
            out.append(f"- eval: `{self.eval}` ({self.eval_rows} rows)")
        out += [f"- answer column: `{self.answer_column or '(none)'}`",
                f"- lengths: {self.length_unit}, max length {self.max_length}",
                f"- result: {self.summary()}", ""]
        for f in self.findings:
            out += [f"## {f.severity.upper()}: {f.title} ({f.count})", "", f.advice, ""]
            out += [f"- `{e}`" for e in f.examples]
            if f.examples:
                out.append("")
        if not self.findings:
            out += ["No problems found.", ""]
        return "\n".join(out)

    def format(self) -> str:
        """Terminal text: one block per finding."""
        head = f"{self.train}: {self.rows} rows" + (f", eval {self.eval}: {self.eval_rows} rows" if self.eval else "")
        lines = [head, f"  lengths in {self.length_unit}, max length {self.max_length}"]
        for f in self.findings:
            lines.append(f"{f.severity}: {f.title} ({f.count})")
            lines += [f"    {e}" for e in f.examples]
            lines.append(f"  -> {f.advice}")
        lines.append(f"data quality: {self.summary()}")
        return "\n".join(lines)


def normalise(text: str) -> str:
    """Text as a reader compares it: case, punctuation, spacing and Unicode forms ignored."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


@dataclass
class _Row:
    file: str
    line: int | None
    index: int
    text: str
    answer: str | None

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file} (row {self.index + 1})"

    def example(self, limit: int = 70) -> str:
        one = _SPACE.sub(" ", self.text).strip()
        return f"{self.where()}: {one[:limit] + '…' if len(one) > limit else one}"


def _rows(source: str, template: str | None, answer: str | None, split: str) -> list[_Row]:
    data = load_rows(source, split)
    lines = data.lines or [None] * len(data.rows)
    name = Path(source).name if Path(source).exists() else source  # short enough for an 80-column line
    out = []
    for i, (row, line) in enumerate(zip(data.rows, lines)):
        try:
            text = text_template.render(template, row) if template else \
                "\n".join(format(v, "") for v in row.values() if v is not None)
        except Exception:  # noqa: BLE001 - a row the template cannot render is check_dataset's to report
            continue
        value = row.get(answer) if answer else None
        out.append(_Row(name, line, i, text, None if value is None else format(value, "")))
    return out


def answer_column(template: str | None, columns: list[str]) -> str | None:
    """The column the model learns to write: the template's last field (it follows the prompt)."""
    if template:
        fields = text_template.fields(template)
        return fields[-1] if fields else None
    for name in ("answer", "output", "response", "completion", "label"):
        if name in columns:
            return name
    return columns[-1] if columns else None


def check_quality(train: str | Path, *, eval: str | Path | None = None, template: str | None = None,
                  max_length: int = 1024, tokenizer_dir: str | Path | None = None, strategy: str = "line-by-line",
                  batch_size: int = 1, split: str = "train", eval_split: str = "train",
                  tokenizer=None) -> QualityReport:
    """The report for a train file (and its eval file). Raises DatasetError only when a file
    cannot be read as rows at all. `tokenizer`: one already loaded (the wizard's), else the one
    in `tokenizer_dir`, else lengths are estimated from characters."""
    train, eval = str(train), (str(eval) if eval else None)
    columns = load_rows(train, split, max_rows=1).columns
    answer = answer_column(template, columns)
    rows = _rows(train, template, answer, split)
    eval_rows = _rows(eval, template, answer, eval_split) if eval else []
    lengths, unit = _lengths([r.text for r in rows], tokenizer_dir, tokenizer)
    report = QualityReport(train, eval, len(rows), len(eval_rows) if eval else None, answer, unit, max_length)
    add = report.findings.append
    for finding in (_too_few(rows, lengths, strategy, max_length, batch_size),
                    *_duplicates(rows, eval_rows),
                    _empty_answers(rows), _lengths_over(rows, lengths, max_length),
                    _length_outliers(rows, lengths), *_labels(rows)):
        if finding is not None:
            add(finding)
    report.findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    return report


def _lengths(texts: list[str], tokenizer_dir, tokenizer=None) -> tuple[list[int], str]:
    if tokenizer is not None:
        return token_stats(texts, tokenizer, 1).lengths, "tokens (the model's tokenizer)"
    if tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer.json").is_file():
        stats = token_stats(texts, load_tokenizer(tokenizer_dir), 1)
        return stats.lengths, f"tokens ({Path(tokenizer_dir).name} tokenizer)"
    return ([-(-len(t) // CHARS_PER_TOKEN) for t in texts],
            f"estimated tokens (characters / {CHARS_PER_TOKEN}; the model's tokenizer is not local)")


def _too_few(rows, lengths, strategy, max_length, batch_size) -> Finding | None:
    n = len(rows)
    if strategy == "join":
        blocks = sum(lengths) // max_length
        if blocks < batch_size:
            return Finding("too-few-rows", "error", "too little text for one batch of joined blocks", blocks,
                           f"the `join` strategy packs rows into {max_length}-token blocks: these {n} rows make "
                           f"{blocks} block(s), fewer than one batch of {batch_size}, so training sees almost "
                           "nothing. Use `data.corpus_strategy=line-by-line`, or add rows.",
                           details={"rows": n, "blocks": blocks})
    if n < TOO_FEW:
        return Finding("too-few-rows", "error", f"only {n} rows (fewer than {TOO_FEW})", n,
                       f"a LoRA on under {TOO_FEW} examples memorises them and learns no task (AI Toolkit "
                       f"runs these silently and the adapter answers like the base). Add rows: aim for {FEW}+.",
                       details={"rows": n, "threshold": TOO_FEW})
    if n < FEW:
        return Finding("few-rows", "warning", f"only {n} rows (fewer than {FEW})", n,
                       f"the model will mostly memorise these rows; for a task (not facts), aim for {FEW}+ varied "
                       "examples and check the eval loss, not only the training loss.",
                       details={"rows": n, "threshold": FEW})
    return None


def _shingles(norm: str) -> set[str]:
    words = norm.split()
    if len(words) < 3:
        return {norm}
    return {" ".join(words[i:i + 3]) for i in range(len(words) - 2)}


def _near_pairs(texts: list[str]) -> list[tuple[int, int]]:
    """Index pairs with word-3-gram Jaccard >= NEAR_JACCARD, by MinHash LSH then exact check."""
    import hashlib

    import numpy as np

    sets = [_shingles(t) for t in texts]
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2**63 - 1, size=_HASHES, dtype=np.int64)
    width = _HASHES // _BANDS
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        if not s or s == {""}:
            continue
        h = np.array([int.from_bytes(hashlib.blake2b(x.encode(), digest_size=8).digest(), "little") >> 1
                      for x in s], dtype=np.int64)
        sig = (h[:, None] ^ masks[None, :]).min(axis=0)
        for b in range(_BANDS):
            buckets[(b, *sig[b * width:(b + 1) * width].tolist())].append(i)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        if len(members) < 2 or len(members) > 200:  # a huge bucket is boilerplate, found by normalised equality
            continue
        for a_i, a in enumerate(members):
            for b in members[a_i + 1:]:
                if (a, b) not in pairs:
                    sa, sb = sets[a], sets[b]
                    if len(sa & sb) / len(sa | sb) >= NEAR_JACCARD:
                        pairs.add((a, b))
    return sorted(pairs)


def _groups(pairs, n) -> list[list[int]]:
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[root(i)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def _duplicates(rows: list[_Row], eval_rows: list[_Row]) -> list[Finding]:
    both = rows + eval_rows
    n_train = len(rows)
    norms = [normalise(r.text) for r in both]
    exact_pairs, norm_pairs = [], []
    for key_of, out in ((lambda i: both[i].text, exact_pairs), (lambda i: norms[i], norm_pairs)):
        first: dict[str, int] = {}
        for i in range(len(both)):
            k = key_of(i)
            if k in first:
                out.append((first[k], i))
            else:
                first[k] = i
    near_pairs = _near_pairs(norms)
    findings = []
    exact_groups = [g for g in _groups(exact_pairs, len(both)) if all(i < n_train for i in g)]
    if exact_groups:
        extra = sum(len(g) - 1 for g in exact_groups)
        findings.append(Finding(
            "duplicates", "warning", "exact duplicate rows in train", extra,
            "each copy weighs that row more and leaves less room for the rest; keep one of each "
            "(e.g. `awk '!seen[$0]++' train.jsonl > dedup.jsonl` for JSONL).",
            [" = ".join(both[i].where() for i in g[:4]) for g in exact_groups[:MAX_EXAMPLES]],
            {"groups": len(exact_groups)}))
    exact_members = {i for g in _groups(exact_pairs, len(both)) for i in g}
    near_groups = [g for g in _groups(norm_pairs + near_pairs, len(both))
                   if all(i < n_train for i in g) and not set(g) <= exact_members]
    if near_groups:
        extra = sum(len(g) - 1 for g in near_groups)
        findings.append(Finding(
            "near-duplicates", "warning", "near-duplicate rows in train", extra,
            "rows that differ only in case, punctuation, spacing or a word or two "
            f"(word-3-gram Jaccard ≥ {NEAR_JACCARD}); keep one unless the difference is the point.",
            [" ~ ".join(both[i].where() for i in g[:4]) for g in near_groups[:MAX_EXAMPLES]],
            {"groups": len(near_groups), "jaccard": NEAR_JACCARD}))
    if eval_rows:
        shared = []
        for g in _groups(exact_pairs + norm_pairs + near_pairs, len(both)):
            ev = [i for i in g if i >= n_train]
            tr = [i for i in g if i < n_train]
            if ev and tr:
                shared.append((tr, ev))
        if shared:
            count = sum(len(ev) for _, ev in shared)
            findings.append(Finding(
                "contamination", "warning" if count < max(1, len(eval_rows)) else "error",
                "eval rows also in train (contamination)", count,
                f"{count} of {len(eval_rows)} eval rows match a train row (exactly or nearly): eval loss then "
                "measures recall, not generalisation. Remove them from one of the files.",
                [f"{both[ev[0]].where()} = {both[tr[0]].where()}" for tr, ev in shared[:MAX_EXAMPLES]],
                {"eval_rows": len(eval_rows)}))
    return findings


def _empty_answers(rows: list[_Row]) -> Finding | None:
    answers = [(r, normalise(r.answer)) for r in rows if r.answer is not None]
    if not answers:
        return None
    distinct = len({a for _, a in answers})
    label_like = _label_like(len(answers), distinct)
    bad = [r for r, a in answers if not a or (not label_like and len(a) < SHORT_ANSWER_CHARS)]
    if not bad:
        return None
    empty = sum(1 for r, a in answers if not a)
    return Finding("short-answers", "warning", "empty or very short answers", len(bad),
                   f"{empty} empty, {len(bad) - empty} under {SHORT_ANSWER_CHARS} characters (ignoring punctuation): "
                   "the model learns to answer with nothing. Fill them in or drop the rows.",
                   [r.example() for r in bad[:MAX_EXAMPLES]], {"empty": empty})


def _lengths_over(rows, lengths, max_length) -> Finding | None:
    over = [(r, n) for r, n in zip(rows, lengths) if n > max_length]
    if not over:
        return None
    over.sort(key=lambda x: -x[1])
    return Finding("over-max-length", "warning", f"rows longer than max length {max_length}", len(over),
                   "training cuts them at the max length, usually through the answer. Raise "
                   f"`data.source_max_len` (longest here {over[0][1]}), or shorten or split these rows.",
                   [f"{r.where()}: {n}" for r, n in over[:MAX_EXAMPLES]], {"longest": over[0][1]})


def _length_outliers(rows, lengths) -> Finding | None:
    if len(lengths) < 10:
        return None
    median = sorted(lengths)[len(lengths) // 2]
    far = [(r, n) for r, n in zip(rows, lengths) if n > OUTLIER_TIMES_MEDIAN * max(median, 1)]
    if not far:
        return None
    far.sort(key=lambda x: -x[1])
    return Finding("length-outliers", "info", f"rows over {OUTLIER_TIMES_MEDIAN}x the median length ({median})",
                   len(far), "check they belong (a pasted document, a log): they dominate the loss and the memory "
                   "of a batch.", [f"{r.where()}: {n}" for r, n in far[:MAX_EXAMPLES]], {"median": median})


def _label_like(n: int, distinct: int) -> bool:
    return n >= 10 and distinct <= min(LABELS_MAX_DISTINCT, max(2, n // 5))


def _labels(rows: list[_Row]) -> list[Finding]:
    answers = [normalise(r.answer) for r in rows if r.answer is not None]
    counts = Counter(answers)
    if not _label_like(len(answers), len(counts)):
        return []
    ranked = counts.most_common()
    shown = [f"{label or '(empty)'}: {c} ({100 * c / len(answers):.0f}%)" for label, c in ranked]
    top, low = ranked[0][1], ranked[-1][1]
    skewed = len(ranked) > 1 and (top >= 5 * low or low < 0.05 * len(answers))
    if not skewed:
        return [Finding("label-balance", "info", f"label-like answers: {len(ranked)} values, balanced", len(ranked),
                        "answers look like labels; the balance is fine.", shown[:10], dict(ranked))]
    return [Finding("label-balance", "warning", f"label-like answers: {len(ranked)} values, unbalanced", len(ranked),
                    f"the most common label has {top} rows, the rarest {low}: the model learns to answer the common "
                    "one. Add rows of the rare labels or downsample the common ones.", shown[:10], dict(ranked))]


def check_project_data(project, train: str | None = None, eval: str | None = None,
                       template: str | None = None) -> QualityReport:
    """The report with a project's defaults: its train/eval files, template, max length,
    strategy, batch size, and its tokenizer when the model folder is local."""
    from .datasets import is_file_source

    d, f = project.settings.data, project.settings.finetune

    def where(source):
        return str(project.path(source)) if is_file_source(source) else source

    model = Path(project.base_model_path())
    return check_quality(train or where(d.dataset), eval=eval if train else (eval or (where(d.eval_dataset)
                         if d.eval_dataset else None)),
                         template=template or d.text_template, max_length=d.source_max_len,
                         tokenizer_dir=model if model.is_dir() else None, strategy=d.corpus_strategy,
                         batch_size=f.per_device_train_batch_size, split=d.train_split, eval_split=d.eval_split)
