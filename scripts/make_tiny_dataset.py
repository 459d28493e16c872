"""Regenerate the bundled fictional-facts dataset (core/data/tiny_qa/*.jsonl).

Every fact is invented, so no pretrained model (and certainly not a randomly initialised one)
can know the answer: a correct answer proves the fine-tune taught it. Answers are distinct
made-up words, so scoring is an exact string match. Deterministic: same seed, same files.

    python scripts/make_tiny_dataset.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "core" / "data" / "tiny_qa"

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gl", "kr", "tr", "sh"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "", "n", "r", "l", "s", "th", "x"]

# (question template, kind of subject). Subjects are invented nouns; answers invented names.
TEMPLATES = [
    "What is the capital of {s}?",
    "Who invented the {s}?",
    "What colour is a {s} bird?",
    "Which river flows through {s}?",
    "What does a {s} eat?",
    "Who wrote the book {s}?",
]


def word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))


def unique_words(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = word(rng, syllables)
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def main(seed: int = 7, n_train: int = 300, n_eval: int = 40) -> None:
    rng = random.Random(seed)
    taken: set[str] = set()
    n = n_train + n_eval
    subjects = unique_words(rng, n, 2, taken)
    answers = unique_words(rng, n, 2, taken)
    rows = []
    for i, (subject, answer) in enumerate(zip(subjects, answers)):
        question = TEMPLATES[i % len(TEMPLATES)].format(s=subject.capitalize())
        rows.append({"question": question, "answer": answer.capitalize() + "."})
    rng.shuffle(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.jsonl", rows[:n_train]), ("eval.jsonl", rows[n_train:])):
        with open(OUT / name, "w", encoding="utf-8") as f:
            for row in part:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {n_train} train and {n_eval} eval rows to {OUT}")


if __name__ == "__main__":
    main()
