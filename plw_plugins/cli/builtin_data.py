"""A small instruction dataset the package generates itself, deterministically, for the demo,
the examples and the tests: no download, no hub.

Half of its tasks have short completions (a word or a number after a long prompt, the regime
where the prompt loss weight matters most) and half long ones (lists and spelled-out words).
"""

from __future__ import annotations

import random

PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"

_WORDS = (
    "apple river stone light garden paper window silver music planet forest candle bridge ocean "
    "yellow rabbit winter castle pencil market thunder violet harbor meadow lantern copper dragon"
).split()
_POSITIVE = "wonderful delightful excellent pleasant charming brilliant lovely superb".split()
_NEGATIVE = "terrible dreadful awful unpleasant boring miserable horrible dull".split()


def _sum(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"Add the two numbers and answer with the sum only. What is {a} plus {b}?", str(a + b)


def _parity(rng: random.Random) -> tuple[str, str]:
    n = rng.randint(100, 9999)
    return f"Decide whether the number {n} is even or odd. Answer with one word.", "even" if n % 2 == 0 else "odd"


def _sentiment(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    word = rng.choice(_POSITIVE if positive else _NEGATIVE)
    subject = rng.choice(_WORDS)
    review = f"The {subject} was {word}; I would tell a friend about it."
    return f"Classify the sentiment of this review as positive or negative.\nReview: {review}", (
        "positive" if positive else "negative"
    )


def _count_up(rng: random.Random) -> tuple[str, str]:
    start = rng.randint(1, 50)
    stop = start + rng.randint(8, 20)
    return f"List the numbers from {start} to {stop}.", ", ".join(str(n) for n in range(start, stop + 1))


def _spell(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_WORDS, 3)
    return f"Spell each word letter by letter: {' '.join(words)}.", "\n".join(
        f"{word}: {'-'.join(word)}" for word in words
    )


def _sort(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_WORDS, rng.randint(5, 9))
    return f"Sort these words alphabetically: {', '.join(words)}.", ", ".join(sorted(words))


SHORT_TASKS = {"sum": _sum, "parity": _parity, "sentiment": _sentiment}
LONG_TASKS = {"count_up": _count_up, "spell": _spell, "sort": _sort}


def _generate(count: int, seed: int):
    rng = random.Random(seed)
    tasks = list(SHORT_TASKS.items()) + list(LONG_TASKS.items())
    for index in range(count):
        name, make = tasks[index % len(tasks)]
        instruction, answer = make(rng)
        yield name, instruction, answer


def instruction_rows(count: int = 512, *, seed: int = 0) -> list[dict[str, str]]:
    """``count`` prompt-completion rows (``prompt``, ``completion``, ``task``), short and long tasks in turn."""
    return [
        {"prompt": PROMPT_TEMPLATE.format(instruction=instruction), "completion": answer, "task": name}
        for name, instruction, answer in _generate(count, seed)
    ]


def instruction_messages(count: int = 512, *, seed: int = 0) -> list[dict[str, list[dict[str, str]]]]:
    """The same tasks as conversations: ``messages`` with one user and one assistant turn."""
    return [
        {"messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}]}
        for _, instruction, answer in _generate(count, seed)
    ]


def alpaca_rows(count: int = 512, *, seed: int = 0) -> list[dict[str, str]]:
    """The same tasks in the Alpaca format (``instruction``, ``input``, ``output``)."""
    return [{"instruction": instruction, "input": "", "output": answer} for _, instruction, answer in _generate(count, seed)]
