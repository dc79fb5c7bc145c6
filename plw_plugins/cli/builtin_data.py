"""A small instruction dataset the package generates itself, deterministically, for the demo,
the examples and the tests: no download, no hub.

Half of its tasks have short completions (a word or a number after a long prompt, the regime
where the prompt loss weight matters most) and half long ones (lists and spelled-out words).
"""

from __future__ import annotations

import random
from typing import Any

from plw_plugins.masks import IGNORE_INDEX

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


def tokenize_prompt_completion(row: dict[str, str], tokenizer: Any, max_length: int | None = None) -> dict[str, list[int]]:
    """``bos prompt completion eos`` as token ids, with labels ``-100`` on ``bos`` and the prompt
    (cut to ``max_length`` tokens): the completion-only labels every framework builds."""
    prompt = [tokenizer.bos_token_id, *tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]]
    completion = [*tokenizer(row["completion"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return {
        "input_ids": (prompt + completion)[:max_length],
        "labels": ([IGNORE_INDEX] * len(prompt) + completion)[:max_length],
    }


def pad_examples(examples: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, Any]:
    """A right-padded batch of tokenized examples: ``input_ids``, ``labels`` (``-100`` on padding)
    and ``attention_mask``, as tensors."""
    import torch

    length = max(len(example["input_ids"]) for example in examples)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    for example in examples:
        padding = length - len(example["input_ids"])
        batch["input_ids"].append(example["input_ids"] + [pad_token_id] * padding)
        batch["labels"].append(example["labels"] + [IGNORE_INDEX] * padding)
        batch["attention_mask"].append([1] * len(example["input_ids"]) + [0] * padding)
    return {key: torch.tensor(value) for key, value in batch.items()}


def instruction_loader(tokenizer: Any, count: int = 256, *, batch_size: int = 8, seed: int = 0) -> Any:
    """A shuffled ``torch`` ``DataLoader`` of ``count`` built-in rows, tokenized with ``tokenizer`` and
    padded per batch (see ``pad_examples``): what a training loop of your own, or Lightning, consumes."""
    from functools import partial

    from torch.utils.data import DataLoader

    examples = [tokenize_prompt_completion(row, tokenizer) for row in instruction_rows(count, seed=seed)]
    return DataLoader(
        examples, batch_size=batch_size, shuffle=True, collate_fn=partial(pad_examples, pad_token_id=tokenizer.pad_token_id)
    )


_NAMES = "Anna Ben Clara David Emma Felix Grace Henry Iris Jonas".split()
_PLACES = "village city school library kitchen station island valley".split()
_VERBS = "found carried painted watched opened cleaned followed described".split()


def _general_sentence(rng: random.Random) -> str:
    kind = rng.randrange(8)
    name, noun = rng.choice(_NAMES), rng.choice(_WORDS)
    if kind == 0:
        return f"{name} {rng.choice(_VERBS)} the {noun} in the {rng.choice(_PLACES)}."
    if kind == 1:
        if rng.random() < 0.5:
            return f"The {noun} was {rng.choice(_POSITIVE)}, so {name} was happy."
        return f"The {noun} was {rng.choice(_NEGATIVE)}, so {name} was sad."
    if kind == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"{a} plus {b} is {a + b}."
    if kind == 3:
        n = rng.randint(100, 9999)
        return f"The number {n} is {'even' if n % 2 == 0 else 'odd'}."
    if kind == 4:
        n = rng.randint(1, 60)
        return f"After {n} comes {n + 1}, and then {n + 2}."
    if kind == 5:
        return f"The word {noun} is spelled {'-'.join(noun)}."
    if kind == 6:
        return f"Someone wrote: the {noun} was {rng.choice(_POSITIVE + _NEGATIVE)}; I would tell a friend about it."
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"What is {a} plus {b}? The answer is {a + b}."


def general_text(count: int = 512, *, seed: int = 0) -> list[str]:
    """``count`` short passages of plain English (four to six sentences each) about the same words,
    numbers and feelings as the instruction tasks, but without their template: the demo pre-trains
    its tiny model on them, and holds some out to measure what fine-tuning makes the model forget."""
    rng = random.Random(seed)
    return [" ".join(_general_sentence(rng) for _ in range(rng.randint(4, 6))) for _ in range(count)]


def short_instruction_rows(count: int = 512, *, seed: int = 0) -> list[dict[str, str]]:
    """``count`` prompt-completion rows of the short-completion tasks only (a word or a number after a
    longer prompt: generation ratio well below 1, where the study found the prompt loss weight matters)."""
    rng = random.Random(seed)
    tasks = list(SHORT_TASKS.items())
    rows = []
    for index in range(count):
        name, make = tasks[index % len(tasks)]
        instruction, answer = make(rng)
        rows.append({"prompt": PROMPT_TEMPLATE.format(instruction=instruction), "completion": answer, "task": name})
    return rows
