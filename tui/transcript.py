"""A chat conversation: prompts, one reply per column (base / tuned / remote), and its Markdown form."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Reply:
    text: str = ""
    tokens: int = 0
    tokens_per_second: float = 0.0
    stopped: bool = False
    error: str | None = None
    done: bool = False

    def stats(self) -> str:
        if self.error:
            return "error"
        bits = [f"{self.tokens} tokens", f"{self.tokens_per_second:.0f} tok/s"]
        if self.stopped:
            bits.append("stopped")
        return " · ".join(bits)


@dataclass
class Turn:
    prompt: str
    replies: dict[str, Reply] = field(default_factory=dict)


@dataclass
class Conversation:
    turns: list[Turn] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def history(self, column: str) -> list[dict]:
        """Messages for the next request of one column: its own earlier replies, not the others'."""
        messages: list[dict] = []
        for turn in self.turns:
            reply = turn.replies.get(column)
            if reply is None or not reply.done or reply.error:
                continue
            messages.append({"role": "user", "content": turn.prompt})
            messages.append({"role": "assistant", "content": reply.text.strip()})
        return messages

    def to_markdown(self, title: str, params: dict, system_prompt: str = "") -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))
        lines = [f"# {title}", "", f"*{when}* · " + " · ".join(f"{k} {v}" for k, v in params.items()), ""]
        if system_prompt:
            lines += ["**System prompt:**", "", *[f"> {line}" for line in system_prompt.splitlines()], ""]
        for turn in self.turns:
            lines += ["## You", "", turn.prompt, ""]
            for column, reply in turn.replies.items():
                lines += [f"### {column} ({reply.stats()})", ""]
                lines += [reply.error if reply.error else reply.text.strip() or "*(no answer)*", ""]
        return "\n".join(lines).rstrip() + "\n"
