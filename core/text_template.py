"""The text-template grammar: what `data.text_template` may hold, and how a row renders through it.

Training renders each row as Olive does, `template.format(**row)` (olive/data/component/
text_generation.py, `get_text`). `str.format` accepts far more than a column reference:
`{q.text}` is attribute access, `{q[0]}` indexing, `{q!r}` a conversion, `{q:>999999999}` a
format spec (a width that size is a memory bomb), `{}` or `{0}` a positional argument. Each
of these fails, or trains on something else, inside Olive after the model has loaded.

aitk accepts exactly the subset where `str.format` does nothing but insert a column's value:
literal text, `{{` and `}}` for braces, and `{column}` where `column` is a name `str.format`
takes as a keyword (not empty, not all decimal digits, no `.` or `[`), with no conversion and
no format spec. Settings validation checks it (so `aitk.toml`, `project set`, `--set` and the
wizard refuse what training would fail on), and `render` is then `template.format(**row)`
exactly, which is what the preview, the dataset check and evaluation use.
"""

from __future__ import annotations

import string
from typing import Any

from .errors import AitkError

HINT = "write fields as {column} (a column name, nothing after it), and literal braces as {{ and }}"


def parse(template: str) -> list[tuple[str, str | None]]:
    """(literal text, column or None) pieces; AitkError naming the first construct outside the grammar."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise AitkError(f"malformed text template: {exc}", HINT) from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parts:
        if name is None:
            out.append((literal, None))
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not name or name.isdecimal():
            raise AitkError(f"text template has a positional field {shown}; fields must name a column",
                            "e.g. {question}; " + HINT)
        if "." in name or "[" in name:
            raise AitkError(f"text template field {shown}: `.` and `[` would be attribute or index access "
                            "in training, not part of a column name",
                            "rename the column to a plain name and use {that_name}")
        if conversion is not None:
            raise AitkError(f"text template field {shown}: conversions (!r, !s, !a) are not supported",
                            "use {" + name + "}: " + HINT)
        if spec:
            raise AitkError(f"text template field {shown}: format specs are not supported",
                            "use {" + name + "}: a column's text is inserted as it is")
        out.append((literal, name))
    return out


def fields(template: str) -> list[str]:
    """Column names the template uses, in order, each once."""
    return list(dict.fromkeys(name for _, name in parse(template) if name is not None))


def check(template: str) -> str:
    """The template itself when it is inside the grammar and uses at least one column."""
    if not fields(template):
        raise AitkError("the text template uses no column", "write {column} where a row's value goes")
    return template


def render(template: str, row: dict[str, Any]) -> str:
    """The training text of one row: `template.format(**row)`, for templates inside the grammar."""
    out: list[str] = []
    for literal, name in parse(template):
        out.append(literal)
        if name is None:
            continue
        if name not in row:
            raise AitkError(f"row has no column '{name}' used by the text template",
                            f"columns: {', '.join(map(str, row)) or '(none)'}")
        out.append(format(row[name], ""))  # what str.format does with an empty spec
    return "".join(out)
