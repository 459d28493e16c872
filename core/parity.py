"""Parity: the model you ship answers like the model you trained.

Answers that change after export come from a prompt, BOS/EOS or stop token that differs between
training, in-tool chat and the exported model. This check asks the project's eval prompts (the
eval split through the project's text template) greedily of every form the project ships, and
compares each with what training saw:

    torch       PyTorch base + adapter on the training text up to the answer: the reference
    torch-chat  the same model through the tokenizer's chat template (`aitk chat` before an export)
    onnx        the ONNX export with its adapter (models/onnx/<precision>)
    merged      the merged export (models/onnx/<precision>-merged), when current with the adapter
    serve       `aitk serve`'s own app on a loopback port, asked over HTTP

and verifies the formats the forms read: the chat template (tokenizer and each export) renders
the training prompt token for token, the token that ends a training sample is a stop token of
PyTorch chat, of each export's genai_config.json and of the server, and BOS/EOS agree.

It runs as the export job's last step (every export path, pipeline child or `aitk export`, ends
there, on the folder just published), and in `aitk evaluate` (`--parity`: only it). The record
(`models/parity/<precision>.json`, written atomically) names the export versions it checked, so
the project index tells passed, failed, not checked and stale (the export changed since) apart.

Heavy libraries (torch, transformers, peft, onnxruntime-genai, uvicorn) load inside `run` only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from . import atomic_file
from .errors import AitkError

RECORD_DIR = Path("models") / "parity"
JOB_RECORD = "parity.json"  # the same record, in the job folder of the job that checked
SCHEMA = 1
DEFAULT_LIMIT = 32  # prompts: enough to see a template or stop bug, a minute at 0.5B on a CPU
PASSED, FAILED, NOT_CHECKED, STALE = "passed", "failed", "not checked", "stale"
REFERENCE = "torch"
EXACT_PRECISIONS = ("fp32",)
FORMS = {
    "torch": "PyTorch + adapter, training text",
    "torch-chat": "PyTorch + adapter, chat template",
    "onnx": "ONNX export + adapter",
    "merged": "ONNX merged export",
    "serve": "aitk serve over HTTP",
}
PASS_RULE = (
    "greedy answers must be identical (whitespace at the ends ignored) where the weights are the same: "
    "torch-chat vs torch always (only the prompt's rendering differs), serve vs the export it answers from "
    "always (only the server path differs), and onnx, merged and serve vs torch when the export is fp32 (the "
    "trained precision: only summation order differs). An fp16 or int4 export changes the weights, so its "
    "rate against torch is reported, not required. And no format finding (chat template, BOS/EOS, stop tokens).")
SENTINEL = "\x00aitk-parity\x00"


def record_path(root: str | Path, precision: str) -> Path:
    return Path(root) / RECORD_DIR / f"{precision}.json"


def read_record(path: str | Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


# -- the mark every front end shows -------------------------------------------------------------
@dataclass(frozen=True)
class ParityMark:
    state: str  # PASSED | FAILED | NOT_CHECKED | STALE
    precision: str
    reason: str = ""
    record: dict | None = None

    @property
    def rates(self) -> str:
        """`onnx 48/48, serve 48/48`: each checked form against the reference."""
        comps = (self.record or {}).get("comparisons", [])
        return ", ".join(f"{c['form']} {c['agree']}/{c['total']}" for c in comps
                         if c.get("against") == REFERENCE and not c.get("skipped"))

    @property
    def divergence(self) -> dict | None:
        """The first divergent prompt of the first comparison that failed (required ones first)."""
        comps = (self.record or {}).get("comparisons", [])
        for wanted in (True, False):
            for c in comps:
                if bool(c.get("required")) == wanted and c.get("first_divergence"):
                    return {"form": c["form"], "against": c["against"], **c["first_divergence"]}
        return None

    @property
    def failures(self) -> list[str]:
        """Names of what failed: comparisons below 100 % that were required, then error findings."""
        rec = self.record or {}
        out = [f"{c['form']}: {c['skipped']}" if c.get("skipped") else f"{c['form']} vs {c['against']} "
               f"{c['agree']}/{c['total']}" for c in rec.get("comparisons", [])
               if c.get("required") and (c.get("skipped") or c["agree"] != c["total"])]
        return out + [f["name"] for f in rec.get("findings", []) if f.get("severity") == "error"]

    @property
    def summary(self) -> str:
        """One line: `passed: onnx 48/48, serve 48/48`, `failed: ...`, `stale: why`, `not checked: how`."""
        if self.state == PASSED:
            return f"passed ({self.precision}): {self.rates}"
        if self.state == FAILED:
            return f"failed ({self.precision}): {'; '.join(self.failures) or self.reason}"
        return f"{self.state}: {self.reason}"


def export_versions(root: str | Path, precision: str) -> dict[str, str | None]:
    """The version stamps of the two export folders a check at `precision` reads."""
    from .export import MERGED_SUFFIX
    from .project import ONNX_DIR
    from .publish import version

    return {name: version(Path(root) / ONNX_DIR / name) for name in (precision, precision + MERGED_SUFFIX)}


def judge(record: dict | None, root: str | Path, precision: str, stale_exports: set[str] | None = None) -> ParityMark:
    """The mark of `record` for the project at `root` now. `stale_exports`: names of export folders
    no longer built from the project's adapter (core/export_state.py), when the caller knows them."""
    if record is None:
        return ParityMark(NOT_CHECKED, precision, "`aitk evaluate --parity` checks it")
    checked = record.get("exports") or {}
    if checked != export_versions(root, precision):
        return ParityMark(STALE, precision, "the export changed after the check: `aitk evaluate --parity`", record)
    if stale_exports is None:
        from . import adapters
        from .export_state import STALE as EXPORT_STALE, export_state
        from .project import ONNX_DIR

        active = adapters.active_dir(root)
        stale_exports = {n for n, v in checked.items() if v and export_state(
            Path(root) / ONNX_DIR / n, active).state == EXPORT_STALE}
    if any(checked.get(n) for n in stale_exports):
        return ParityMark(STALE, precision, "the adapter changed after the check: export again", record)
    return ParityMark(PASSED if record.get("passed") else FAILED, precision, record.get("verdict", ""), record)


def mark(root: str | Path, precision: str, stale_exports: set[str] | None = None) -> ParityMark:
    return judge(read_record(record_path(root, precision)), root, precision, stale_exports)


def job_mark(job_dir: str | Path) -> ParityMark | None:
    """The mark of the check a job ran (None: it ran none), stale once its project's export moved
    on. Reads a record and two stamps only (a front end's table calls it): a new adapter shows as
    stale here once it is exported."""
    record = read_record(Path(job_dir) / JOB_RECORD)
    if record is None:
        return None
    root = record.get("root")
    if not root or not Path(root).is_dir():
        return ParityMark(STALE, record.get("precision", "?"), "the project is gone", record)
    return judge(record, root, record["precision"], stale_exports=set())


# -- the report's words (the job log and the CLI print these) ------------------------------------
def summary_lines(record: dict) -> list[str]:
    verdict = PASSED if record.get("passed") else FAILED
    out = [f"parity {record['precision']}: {verdict} ({record['prompts']} eval prompts, greedy, at most "
           f"{record['max_new_tokens']} new tokens)"]
    out.append(f"  {'form':11} {'vs':11} {'agree':>9}  required")
    for c in record.get("comparisons", []):
        if c.get("skipped"):
            out.append(f"  {c['form']:11} {'':11} {'skipped':>9}  {c['skipped']}"
                       + (f": {c['error']}" if c.get("error") else ""))
            continue
        rate = f"{c['agree']}/{c['total']}"
        out.append(f"  {c['form']:11} {c['against']:11} {rate:>9}  {'yes' if c.get('required') else 'no'}")
    div = ParityMark(verdict, record["precision"], record=record).divergence
    if div:
        out.append(f"  first divergence ({div['form']} vs {div['against']}, eval row {div['row'] + 1}): "
                   f"{div['prompt']!r}")
        out.append(f"    expected {div['expected']!r}")
        out.append(f"    got      {div['got']!r}")
    findings = record.get("findings", [])
    for f in findings:
        out.append(f"  {'✘' if f['severity'] == 'error' else '·'} {f['name']}: {f['message']}")
        if f.get("hint"):
            out.append(f"      {f['hint']}")
    if not findings:
        out.append("  formats: chat template, BOS/EOS and stop tokens agree")
    return out


# -- the check ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    row: int  # index in the eval split
    user: str  # the user message a chat front end sends
    prefix: str  # the training text up to where the answer starts (BOS included where training has it)
    answer: str  # the dataset's answer


def _finding(name: str, message: str, hint: str = "", severity: str = "error") -> dict:
    return {"name": name, "severity": severity, "message": message, "hint": hint}


def _snippets(a: str, b: str, width: int = 28) -> tuple[str, str]:
    """Both texts around their first difference."""
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    lo = max(0, i - width)
    cut = "…" if lo else ""
    return repr(cut + a[lo:i + width]), repr(cut + b[lo:i + width])


def _ids(value) -> list[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]


def end_token(template: str, special) -> str | None:
    """The token that ends every training sample: the template's own final special token (an
    end-of-turn), else the EOS training appends (core/training_text.olive_template), else none."""
    stripped = template.rstrip()
    ends = [t for t in special.specials if stripped.endswith(t)]
    return max(ends, key=len) if ends else special.eos


def prompts(project, special, tokenizer, limit: int = DEFAULT_LIMIT) -> list[Prompt]:
    """The eval rows as prompts: the training text up to the answer (the text template's last
    field), and the user message whose chat rendering should be exactly that text."""
    from . import text_template, training_text
    from .evaluate import eval_rows

    template = project.settings.data.text_template
    names = text_template.fields(template)
    if len(names) < 2:
        raise AitkError("parity needs a text template with a prompt field and an answer field (the last one)",
                        "e.g. data.text_template = '<|user|>\\n{question}<|end|>\\n<|assistant|>\\n{answer}<|end|>'")
    answer = names[-1]
    pieces = text_template.parse(training_text.olive_template(template, special))
    last = max(i for i, (_, name) in enumerate(pieces) if name == answer)
    try:
        framed = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], add_generation_prompt=True,
                                               tokenize=False)
        head, found, tail = framed.partition(SENTINEL)
    except Exception:  # noqa: BLE001 - no chat template: the format check names it
        head, found, tail = "", "", ""
    out = []
    for index, row in enumerate(eval_rows(project)[:limit]):
        missing = [n for n in names if n not in row]
        if missing:
            raise AitkError(f"eval row {index + 1} has no column '{missing[0]}' used by the text template",
                            f"columns: {', '.join(map(str, row))}")
        prefix = "".join(lit + ("" if n is None else format(row[n], "")) for lit, n in pieces[:last]) + pieces[last][0]
        if found and prefix.startswith(head) and prefix.endswith(tail) and len(prefix) >= len(head) + len(tail):
            user = prefix[len(head):len(prefix) - len(tail)]
        else:  # the chat template frames prompts otherwise: the format check says how
            user = "\n".join(format(row[n], "") for n in names[:-1])
        out.append(Prompt(index, user, prefix, format(row[answer], "")))
    return out


def _messages(p: Prompt) -> list[dict]:
    return [{"role": "user", "content": p.user}]


def _compare(form: str, against: str, required: bool, got: list[str], expected: list[str],
             items: list[Prompt]) -> dict:
    agree = sum(1 for g, e in zip(got, expected) if g == e)
    first = next(({"row": p.row, "prompt": p.user, "expected": e, "got": g, "answer": p.answer}
                  for p, g, e in zip(items, got, expected) if g != e), None)
    return {"form": form, "label": FORMS[form], "against": against, "required": required, "agree": agree,
            "total": len(expected), "rate": round(agree / len(expected), 4) if expected else 0.0,
            "first_divergence": first}


def _skipped(form: str, why: str) -> dict:
    return {"form": form, "label": FORMS[form], "against": REFERENCE, "required": False, "agree": 0, "total": 0,
            "rate": 0.0, "first_divergence": None, "skipped": why}


def _ask(engine, items: list[Prompt], options, adapter) -> list[str]:
    return [engine.stream(_messages(p), options, adapter=adapter).read().strip() for p in items]


def _reference(engine, items: list[Prompt], stop_ids: list[int], max_new_tokens: int) -> list[str]:
    """Greedy answers of the PyTorch model + adapter on exactly the tokens training saw before
    each answer, stopping where a training sample ends."""
    import torch

    tok = engine.tokenizer
    out = []
    for p in items:
        ids = torch.tensor([tok(p.prefix, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            gen = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                                        pad_token_id=stop_ids[0] if stop_ids else None)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


def _prompt_findings(where: str, items: list[Prompt], train_ids: list[list[int]], rendered: list[str],
                     ids: list[list[int]], hint: str) -> list[dict]:
    """A finding when `where` renders or tokenizes a prompt otherwise than training saw it."""
    for p, want, text, have in zip(items, train_ids, rendered, ids):
        if have == want:
            continue
        if text != p.prefix:
            a, b = _snippets(p.prefix, text)
            message = f"renders eval row {p.row + 1} as {b}, training saw {a}"
        else:
            message = (f"renders eval row {p.row + 1} as training does but tokenizes it otherwise "
                       f"({len(have)} tokens, starting {have[:4]}; training: {len(want)}, starting {want[:4]})"
                       " — a BOS added or missing")
        return [_finding(f"chat template: {where}", message, hint)]
    return []


def _serve(project, precision: str, items: list[Prompt], options, adapter: str) -> tuple[list[str], str]:
    """The answers of `aitk serve`'s app, started on a free loopback port and asked over HTTP
    (OpenAI chat completions, streamed), and the export folder it answered from."""
    import socket
    import threading

    import uvicorn

    from .chat import RemoteChatEngine
    from .server import project_app

    app, name, engine, _ = project_app(str(project.root), precision=precision)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="aitk-parity-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise AitkError("aitk serve did not start for the parity check", "see the job log")
            time.sleep(0.05)
        remote = RemoteChatEngine(f"http://127.0.0.1:{port}/v1", model=f"{name}:{adapter}")
        answers = _ask(remote, items, options, None)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    return answers, getattr(engine, "merged", engine).model_dir.name


def run(project, precision: str | None = None, job_dir: Path | None = None, limit: int = DEFAULT_LIMIT,
        say=print) -> dict:
    """Check every form of the project's export at `precision`; write the record into the project
    (and `job_dir`), say the summary, and return the record."""
    from transformers import AutoTokenizer

    from . import training_text
    from .chat import GenaiChatEngine, TorchChatEngine
    from .export import ADAPTER_NAME
    from .finetune import merged_dir
    from .generation import GenerationOptions, load_user_values, resolve
    from .publish import current, current_adapter, current_export
    from .server import current_merged

    t0 = time.time()
    precision = precision or project.settings.inference.precision
    adapter_dir = current_adapter(project)
    if adapter_dir is None:
        raise AitkError(f"{project.name} has no fine-tuned adapter: parity compares the tuned forms",
                        "run `aitk finetune` first")
    onnx_dir, merged = current_export(project, precision), current_merged(project, precision)
    if onnx_dir is None and merged is None:
        raise AitkError(f"{project.name} has no {precision} export to check",
                        f"run `aitk export --precision {precision}`")
    versions = export_versions(project.root, precision)  # before reading: a newer export makes this stale
    base = project.base_model_path()
    special = training_text.special_tokens(base)
    tok = AutoTokenizer.from_pretrained(base)
    items = prompts(project, special, tok, limit)
    template = project.settings.data.text_template
    end = end_token(template, special)
    end_id = tok.convert_tokens_to_ids(end) if end else None
    answer_tokens = max(len(tok(p.answer + (end or ""), add_special_tokens=False)["input_ids"]) for p in items)
    max_new = min(128, max(16, answer_tokens + 8))
    options = GenerationOptions(max_new_tokens=max_new, temperature=0.0)
    say(f"[aitk] parity {precision}: {len(items)} eval prompts, greedy, at most {max_new} new tokens")

    findings: list[dict] = []
    if end is None:
        findings.append(_finding("end token: training", "training samples end without an end token or EOS, so no "
                                 "form learns where an answer stops", "end data.text_template with the model's "
                                 "end-of-turn token", "note"))
    if resolve(project.settings.inference, load_user_values()).system_prompt:
        findings.append(_finding("system prompt: chat", "a system prompt (config.toml [chat]) adds a system message "
                                 "to `aitk chat` and the Chat pane that training never saw (parity asks without it; "
                                 "`aitk serve` sends none)", "train with the same system message, or clear it", "note"))
    train_ids = [tok(p.prefix, add_special_tokens=False)["input_ids"] for p in items]
    train_stop = sorted({i for i in (end_id, tok.eos_token_id) if isinstance(i, int)})

    torch_engine = TorchChatEngine(base, adapter_dir)
    say("[aitk] parity: PyTorch + adapter (the reference)")
    expected = _reference(torch_engine, items, train_stop, max_new)
    comparisons = []
    try:
        rendered = [tok.apply_chat_template(_messages(p), add_generation_prompt=True, tokenize=False) for p in items]
        chat_ids = [tok.apply_chat_template(_messages(p), add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"] for p in items]
    except Exception as e:  # noqa: BLE001 - none, or one that fails: named, the other forms still checked
        findings.append(_finding("chat template: tokenizer", f"cannot render a chat prompt: {e}",
                                 "give the model a chat template"))
        comparisons.append({**_skipped("torch-chat", "no usable chat template"), "required": True})
    else:
        findings += _prompt_findings("tokenizer", items, train_ids, rendered, chat_ids,
                                     "make the model's chat template (tokenizer_config.json / chat_template.jinja) "
                                     "and data.text_template format prompts alike")
        say("[aitk] parity: PyTorch + adapter through the chat template")
        comparisons.append(_compare("torch-chat", REFERENCE, True, _ask(torch_engine, items, options, "tuned"),
                                    expected, items))
    gen_eos = _ids(getattr(torch_engine.model.generation_config, "eos_token_id", None))
    if end_id is not None and end_id not in gen_eos:
        findings.append(_finding("eos: PyTorch generation_config.json",
                                 f"stops on {gen_eos}, not on {end!r} ({end_id}), which ends every training sample",
                                 "add it to eos_token_id in the base model's generation_config.json"))
    del torch_engine

    exact = precision in EXACT_PRECISIONS
    answers: dict[str, list[str]] = {}
    folders = {"onnx": onnx_dir, "merged": merged}
    for form, folder in folders.items():
        if folder is None:
            stale = current(merged_dir(project, precision)) if form == "merged" else None
            comparisons.append(_skipped(form, "stale: built from another adapter" if stale else
                                        "no merged export (`aitk export --merged`)" if form == "merged" else
                                        f"no {precision} adapter export (`aitk export`)"))
            continue
        findings += _export_findings(folder, tok, special, end, end_id)
        try:
            engine = GenaiChatEngine(folder)
            try:
                prompts_text = [engine.prompt(_messages(p)) for p in items]
            except RuntimeError as e:  # genai's: "Empty chat template." and the like
                findings.append(_finding(f"chat template: export {folder.name}", f"cannot render a chat prompt: {e}",
                                         f"export again: {folder} needs the base model's chat template"))
                raise
            findings += _prompt_findings(f"export {folder.name}", items, train_ids, prompts_text,
                                         [[int(i) for i in engine.tokenizer.encode(t)] for t in prompts_text],
                                         f"the export's chat_template.jinja / tokenizer_config.json in {folder} "
                                         "differ from the base model's: export again")
            say(f"[aitk] parity: {FORMS[form]} ({folder.name})")
            answers[form] = _ask(engine, items, options, ADAPTER_NAME if form == "onnx" else None)
            del engine
        except (AitkError, RuntimeError) as e:  # genai's own errors (an empty chat template) are RuntimeErrors
            comparisons.append({**_skipped(form, "could not answer"), "required": True, "error": str(e)})
            continue
        comparisons.append(_compare(form, REFERENCE, exact, answers[form], expected, items))
    try:
        say("[aitk] parity: aitk serve on 127.0.0.1 over HTTP")
        served, source = _serve(project, precision, items, options, ADAPTER_NAME)
    except (AitkError, RuntimeError) as e:
        comparisons.append({**_skipped("serve", "could not answer"), "required": True, "error": str(e)})
    else:
        comparisons.append(_compare("serve", REFERENCE, exact, served, expected, items))
        source_form = "merged" if source.endswith("-merged") else "onnx"
        if not exact and source_form in answers:
            comparisons.append(_compare("serve", source_form, True, served, answers[source_form], items))
        eos = _ids(_genai_config(folders[source_form] or onnx_dir or merged).get("eos_token_id"))
        if end_id is not None and end_id not in eos:
            findings.append(_finding("eos: aitk serve", f"answers tuned from {source} and stops on {eos} (its "
                                     f"genai_config.json), not on {end!r} ({end_id}), which ends every training "
                                     "sample", "fix eos_token_id in that genai_config.json, or export again"))

    failed = [c for c in comparisons if c.get("required") and (c.get("skipped") or c["agree"] != c["total"])]
    errors = [f for f in findings if f["severity"] == "error"]
    record = {
        "schema": SCHEMA, "project": project.name, "root": str(project.root), "precision": precision,
        "checked": time.time(), "seconds": round(time.time() - t0, 2), "prompts": len(items),
        "max_new_tokens": max_new, "reference": REFERENCE, "rule": PASS_RULE, "exports": versions,
        "end_token": end, "stops": {"training": train_stop, "torch-chat": gen_eos},
        "comparisons": comparisons, "findings": findings, "passed": not failed and not errors,
        "verdict": "; ".join([f"{c['form']} vs {c['against']}" for c in failed] + [f["name"] for f in errors]),
    }
    text = json.dumps(record, indent=2)
    atomic_file.write_text(record_path(project.root, precision), text)
    if job_dir is not None:
        atomic_file.write_text(Path(job_dir) / JOB_RECORD, text)
    for line in summary_lines(record):
        say(f"[aitk] {line}")
    return record


def _genai_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, dict) else {}


def _export_findings(folder: Path, tok, special, end: str | None, end_id: int | None) -> list[dict]:
    """The export's genai_config.json and tokenizer_config.json against the training tokenizer."""
    found = []
    config = _genai_config(folder)
    eos = _ids(config.get("eos_token_id"))
    where = f"genai_config.json {folder.name}"
    if end_id is not None and end_id not in eos:
        found.append(_finding(f"eos: {where}", f"eos_token_id {eos} lacks {end!r} ({end_id}), which ends every "
                              "training sample: answers run on past their end",
                              f"add {end_id} to model.eos_token_id in {folder / 'genai_config.json'}, or export again"))
    bos_id = tok.bos_token_id
    if isinstance(bos_id, int) and "bos_token_id" in config and config["bos_token_id"] != bos_id:
        found.append(_finding(f"bos: {where}", f"bos_token_id {config['bos_token_id']} is not the tokenizer's "
                              f"{tok.bos_token!r} ({bos_id})", "export again"))
    try:
        exported = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        exported = None
    if isinstance(exported, dict):
        for key, want in (("bos_token", special.bos), ("eos_token", special.eos)):
            have = exported.get(key)
            have = have.get("content") if isinstance(have, dict) else have
            if have != want:
                found.append(_finding(f"special tokens: tokenizer_config.json {folder.name}",
                                      f"{key} is {have!r}, training's is {want!r}", "export again"))
    return found


def outcome(record: dict) -> dict:
    """What a job's own result keeps of a check (the record itself is in the job folder)."""
    return {"precision": record["precision"], "passed": record["passed"], "verdict": record.get("verdict", ""),
            "divergence": ParityMark(PASSED, record["precision"], record=record).divergence}


def job_step(project, job_dir: Path, precision: str | None = None, *, reuse: bool = False,
             limit: int = DEFAULT_LIMIT, say=print) -> dict | None:
    """Parity as the last step of an export or evaluate job. A project without what parity
    compares (no adapter, a base-only export, a text template without an answer field) is said
    and skipped: the export itself is fine. `reuse`: a check made after this very export is not
    repeated (the evaluate job of a pipeline follows its export)."""
    precision = precision or project.settings.inference.precision
    if reuse:
        found = mark(project.root, precision)
        if found.state in (PASSED, FAILED):
            say(f"[aitk] parity {precision}: {found.state} when checked after the export; not repeated "
                "(`aitk evaluate --parity` checks again)")
            return outcome(found.record)
    try:
        return outcome(run(project, precision, job_dir, limit, say=say))
    except AitkError as e:
        say(f"[aitk] parity not checked: {e}")
    except Exception as e:  # noqa: BLE001 - a check that breaks must not fail the export it checks
        import traceback

        traceback.print_exc()
        say(f"[aitk] parity not checked: {type(e).__name__}: {e}")
    return None
