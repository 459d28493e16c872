"""core.generation: one options model, its bounds, the precedence of its layers and the context rule."""

from __future__ import annotations

import pytest

from aitk.core import generation
from aitk.core.errors import AitkError
from aitk.core.generation import ContextOverflow, GenerationOptions, fit, resolve
from aitk.core.settings import InferenceSettings


def words(messages):
    """Token count of a prompt where each word is a token and each message costs 2 more."""
    return sum(len(m["content"].split()) + 2 for m in messages)


def convo(n):
    out = [{"role": "system", "content": "be brief"}]
    for i in range(n):
        out += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]
    return out + [{"role": "user", "content": "last one"}]


def test_precedence_project_then_user_config_then_request():
    inference = InferenceSettings(max_new_tokens=33, temperature=0.4, top_p=0.8, top_k=7)
    assert resolve() == GenerationOptions(**{k: v for k, v in generation.DEFAULTS.items()})
    got = resolve(inference, {"top_k": 9, "system_prompt": "hi"}, {"temperature": 0.9, "top_p": None})
    assert (got.max_new_tokens, got.temperature, got.top_p, got.top_k, got.system_prompt) == (33, 0.9, 0.8, 9, "hi")
    # The project's settings take their defaults and bounds from the same table.
    assert InferenceSettings().max_new_tokens == generation.DEFAULTS["max_new_tokens"]
    with pytest.raises(ValueError):
        InferenceSettings(top_p=0.0)


def test_bounds_are_checked_in_one_place_with_the_field_named():
    with pytest.raises(AitkError, match=r"top_p must be between 0.01 and 1.0 \(got 3.0\)"):
        resolve(request={"top_p": "3"})
    with pytest.raises(AitkError, match="max_new_tokens: 'many' is not a number"):
        resolve(request={"max_new_tokens": "many"})
    with pytest.raises(AitkError, match="config.toml \\[chat\\] temperature must be between"):
        resolve(user={"temperature": 9})
    values, problems = generation.user_values({"top_p": 7.0, "max_new_tokens": "x", "top_k": 3, "endpoint": "u"})
    assert values == {"top_k": 3} and len(problems) == 2 and "top_p: 7.0 is outside" in problems[1]


def test_a_long_conversation_drops_its_oldest_turns_and_keeps_the_system_prompt():
    messages = convo(10)
    got = fit(messages, GenerationOptions(max_new_tokens=20), 80, words, trim=True)
    assert got.messages[0] == messages[0] and got.messages[-1] == messages[-1]
    assert got.prompt_tokens + 20 <= 80 and got.dropped > 0
    assert got.messages[1:] == messages[len(messages) - len(got.messages) + 1:]  # the newest turns, whole
    assert got.options.max_new_tokens == 20
    # When the newest message alone leaves less room, the answer is capped to it.
    alone = [{"role": "user", "content": "word " * 70}]
    assert fit(alone, GenerationOptions(max_new_tokens=20), 80, words, trim=True).options.max_new_tokens == 8


def test_api_requests_are_refused_with_the_numbers_or_capped_when_they_named_no_max():
    messages = [{"role": "user", "content": "word " * 30}]
    with pytest.raises(ContextOverflow) as e:
        fit(messages, GenerationOptions(max_new_tokens=60), 80, words, strict=True)
    assert str(e.value).startswith("32 prompt tokens + max_tokens 60 = 92 exceeds the model's context of 80 tokens")
    assert e.value.hint.startswith("ask for at most 48")
    assert fit(messages, GenerationOptions(max_new_tokens=60), 80, words).options.max_new_tokens == 48
    with pytest.raises(ContextOverflow, match="leaves no room"):
        fit([{"role": "user", "content": "word " * 100}], GenerationOptions(), 80, words, trim=True)
    assert fit(convo(50), GenerationOptions(), None, words).dropped == 0  # unknown context: nothing cut
