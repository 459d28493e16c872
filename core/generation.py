"""Generation options: one model, one set of bounds, one precedence, one context rule.

Used by the server, `aitk chat` and the app's Chat pane alike.

Precedence (later wins, a layer only gives the values it sets):
    built-in defaults < project `[inference]` < the user's `config.toml [chat]` < the request
(the request being CLI flags, the Chat pane's fields, or an HTTP request's body).

The context window (`fit`): a prompt and its answer must fit the model's context.
- A conversation from a chat front end (`trim=True`) drops its oldest turns (a user message and
  the replies after it), never the system prompt nor the newest user message, until the prompt
  plus `max_new_tokens` fits; if the newest message alone leaves less room, the answer is capped
  to what is left.
- An API request that names `max_tokens` (`strict=True`) is refused when it does not fit, with
  the numbers (as OpenAI does); one that leaves it out gets the default capped to what is left.
- Nothing fits (the prompt alone fills the context): refused, with the numbers.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from typing import Callable

from .errors import AitkError

# name: (lowest, highest). Context-aware on top: max_new_tokens must also stay below the context.
BOUNDS: dict[str, tuple[float, float]] = {
    "max_new_tokens": (1, 32768), "temperature": (0.0, 5.0), "top_p": (0.01, 1.0), "top_k": (0, 10000),
}
DEFAULTS = {"max_new_tokens": 128, "temperature": 0.0, "top_p": 1.0, "top_k": 50}
HELP = {
    "max_new_tokens": "Longest answer, in tokens (also capped by the model's context).",
    "temperature": "0 is greedy (deterministic); higher samples more freely.",
    "top_p": "Nucleus sampling mass.",
    "top_k": "Sample among the k most likely tokens (0: all).",
}
_KINDS = {"max_new_tokens": int, "temperature": float, "top_p": float, "top_k": int}
USER_KEYS = (*BOUNDS, "system_prompt")


@dataclass
class GenerationOptions:
    max_new_tokens: int = DEFAULTS["max_new_tokens"]
    temperature: float = DEFAULTS["temperature"]  # 0 = greedy
    top_p: float = DEFAULTS["top_p"]
    top_k: int = DEFAULTS["top_k"]
    system_prompt: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_value(name: str, value, where: str = "") -> int | float:
    """`value` as the option's type when it is within bounds, else an AitkError naming both."""
    label = f"{where}{name}"
    kind = _KINDS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = kind(str(value).strip())
        except ValueError:
            raise AitkError(f"{label}: {value!r} is not a number", _bounds_hint(name)) from None
    if kind is int and value != int(value):
        raise AitkError(f"{label}: {value!r} is not a whole number", _bounds_hint(name))
    value = kind(value)
    lo, hi = BOUNDS[name]
    if not lo <= value <= hi:
        raise AitkError(f"{label} must be between {lo} and {hi} (got {value})", _bounds_hint(name))
    return value


def _bounds_hint(name: str) -> str:
    lo, hi = BOUNDS[name]
    return f"{name}: a number from {lo} to {hi}. {HELP[name]}"


def resolve(inference=None, user: dict | None = None, request: dict | None = None) -> GenerationOptions:
    """The options for one answer, by the precedence above. `inference` is a project's
    `InferenceSettings` (or None); `user` and `request` are dicts whose None values are unset."""
    values = dict(DEFAULTS)
    system_prompt = None
    if inference is not None:
        values.update({k: getattr(inference, k) for k in BOUNDS if getattr(inference, k, None) is not None})
        system_prompt = getattr(inference, "system_prompt", None) or None
    for layer, where in ((user, "config.toml [chat] "), (request, "")):
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key == "system_prompt":
                system_prompt = str(value).strip() or None
            elif key in BOUNDS:
                values[key] = check_value(key, value, where)
    return GenerationOptions(**values, system_prompt=system_prompt)


def user_values(table, where: str = "config.toml: chat") -> tuple[dict, list[str]]:
    """The generation options a user wrote in config.toml's `[chat]` table, and a problem line for
    each bad one (which is then left out, so the layer below applies). Other keys are ignored."""
    if not isinstance(table, dict):
        return {}, [f"{where}: expected a table; using defaults"]
    values, problems = {}, []
    for key in USER_KEYS:
        if key not in table:
            continue
        value = table[key]
        if key == "system_prompt":
            if isinstance(value, str):
                values[key] = value
            else:
                problems.append(f"{where}.{key}: expected text, got {value!r}; ignored")
            continue
        kind = _KINDS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
            problems.append(f"{where}.{key}: expected {kind.__name__}, got {value!r}; ignored")
            continue
        lo, hi = BOUNDS[key]
        if not lo <= value <= hi:
            problems.append(f"{where}.{key}: {value!r} is outside {lo}..{hi}; ignored")
            continue
        values[key] = kind(value)
    return values, problems


def load_user_values() -> dict:
    """The user's `[chat]` generation options from config.toml ({} when none or unreadable; the
    app reports a broken file, the engine just uses the layers below)."""
    from . import paths

    try:
        data = tomllib.loads((paths.config_dir() / paths.CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return user_values(data.get("chat", {}))[0]


class ContextOverflow(AitkError):
    """A prompt and its answer do not fit the model's context (OpenAI's `context_length_exceeded`)."""

    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, max_new_tokens: int, context_length: int):
        self.prompt_tokens, self.max_new_tokens, self.context_length = prompt_tokens, max_new_tokens, context_length
        if prompt_tokens >= context_length:
            message = (f"the prompt is {prompt_tokens} tokens, which leaves no room for an answer in the "
                       f"model's context of {context_length} tokens")
            hint = "shorten the messages (or start a new conversation)"
        else:
            message = (f"{prompt_tokens} prompt tokens + max_tokens {max_new_tokens} = "
                       f"{prompt_tokens + max_new_tokens} exceeds the model's context of {context_length} tokens")
            hint = f"ask for at most {context_length - prompt_tokens} new tokens, or shorten the messages"
        super().__init__(message, hint)


@dataclass
class Fit:
    messages: list[dict]
    options: GenerationOptions
    prompt_tokens: int
    dropped: int = 0  # turns of the conversation left out to fit (see the module docstring)


def fit(messages: list[dict], options: GenerationOptions, context_length: int | None,
        count: Callable[[list[dict]], int], *, trim: bool = False, strict: bool = False) -> Fit:
    """Messages and options that fit `context_length`, by the rule in the module docstring.
    `messages` already carry the system prompt; `count` gives their prompt's token count."""
    prompt_tokens = count(messages)
    if not context_length:
        return Fit(messages, options, prompt_tokens)
    if options.max_new_tokens >= context_length:
        if strict:
            raise ContextOverflow(prompt_tokens, options.max_new_tokens, context_length)
        options = replace(options, max_new_tokens=context_length - 1)
    dropped = 0
    if trim:
        head = [m for m in messages[:1] if m.get("role") == "system"]
        turns = turns_of(messages[len(head):])
        while prompt_tokens + options.max_new_tokens > context_length and len(turns) > 1:
            turns.pop(0)
            dropped += 1
            messages = head + [m for turn in turns for m in turn]
            prompt_tokens = count(messages)
    room = context_length - prompt_tokens
    if options.max_new_tokens > room:
        if strict or room < 1:
            raise ContextOverflow(prompt_tokens, options.max_new_tokens, context_length)
        options = replace(options, max_new_tokens=room)
    return Fit(messages, options, prompt_tokens, dropped)


def turns_of(messages: list[dict]) -> list[list[dict]]:
    """Split at each user message: a turn is a user message and whatever follows it."""
    found: list[list[dict]] = []
    for m in messages:
        if m.get("role") == "user" or not found:
            found.append([m])
        else:
            found[-1].append(m)
    return found
