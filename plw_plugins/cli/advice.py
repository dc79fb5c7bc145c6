"""What the prompt loss weight study says about a dataset with given token statistics.

Grounded in one study, cited in every piece of advice: Huerta-Enochian & Ko, "Instruction
Fine-Tuning: Does Prompt Loss Matter?", EMNLP 2024, arXiv:2401.13586. They fine-tuned LLaMA 1 and 2
(7B) on Alpaca-style data at prompt loss weights from 0 to 1 and found the weight matters on
short-completion data (generation ratio R_g < 1) and not significantly on longer completions.

The regime comes from R_g as the study measures it (the data's own text, no template); the loss
shares at each weight come from the tokens the trainer trains (template included).
"""

from __future__ import annotations

CITATION = (
    'Huerta-Enochian & Ko, "Instruction Fine-Tuning: Does Prompt Loss Matter?", EMNLP 2024, '
    "https://arxiv.org/abs/2401.13586"
)
SHORT_COMPLETION_BELOW = 1.0
SHOWN_WEIGHTS = (0.01, 0.1, 0.5, 1.0)
TEMPLATE_ADVICE_FROM = 0.2  # the template's share of the trained prompt from which the advice speaks of it
ROLE_ADVICE_FROM = 0.2  # a system prompt's or chat template's share of the loss from which the advice speaks of it
KEY_PLACES = "PLWSFTConfig, the Axolotl YAML or the PromptLossWeight callback"
STUDY_DATASETS = "AlpacaDataShort 0.08, AlpacaData 3.27, AlpacaDataCleaned 7.83"  # the study's Table 1


def prompt_loss_share(prompt_tokens: int, completion_tokens: int, prompt_loss_weight: float) -> float:
    """The fraction of the loss's total weight that falls on prompt tokens at ``prompt_loss_weight``."""
    weighted = prompt_loss_weight * prompt_tokens
    total = weighted + completion_tokens
    return weighted / total if total else 0.0


def advice(
    generation_ratio: float,
    generation_ratio_mean_of_rows: float,
    prompt_tokens: int,
    completion_tokens: int,
    short_completion_row_share: float,
    *,
    template_prompt_share: float = 0.0,
    template_tokens_per_row: float = 0.0,
    role_paragraphs: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """Paragraphs of advice for data with these statistics: its regime, the weights the study found
    best for it, what a weight of 0 and of 1 risk, and what a large template means.

    ``generation_ratio`` and its mean of rows are the study's (content); ``prompt_tokens`` and
    ``completion_tokens`` are the trained counts, template included, on which the loss shares depend.
    ``role_paragraphs`` (from :func:`role_share_advice`) go before the closing share line and source."""
    share = {w: prompt_loss_share(prompt_tokens, completion_tokens, w) for w in SHOWN_WEIGHTS}
    share_line = ", ".join(f"PLW {w:g}: {100 * s:.1f}%" for w, s in share.items())
    paragraphs = []
    if generation_ratio < SHORT_COMPLETION_BELOW:
        paragraphs += [
            f"SHORT-COMPLETION DATA (R_g = {generation_ratio:.2f} < 1): the regime in which the prompt loss weight "
            "matters. In the study, downstream scores had a statistically significant negative quadratic relationship "
            "with PLW on such data: small non-zero weights (0.01 to 0.5) beat both 0 and 1 on multiple-choice and "
            "short-generation benchmarks, while weights near 1 were best on long-generation benchmarks. "
            f"For comparison, the study's R_g (Table 1): {STUDY_DATASETS}.",
            "What to do: if your target is short answers (classification, extraction, multiple choice, tool calls), "
            "start at PLW 0.01 to 0.1 (the package default is 0.1); if it is long-form generation, try a weight near 1. "
            "If you can afford a sweep, compare 0.01, 0.1 and 0.5 on your own evaluation "
            "(`plw-plugins demo --model YOUR_MODEL --dataset YOUR_DATA --weights 0,0.01,0.1,0.5,1`).",
            f"Risk of PLW = 0 (prompt masking, the usual default): it was almost always the worst setting in the study "
            f"on short-completion data. Only {100 * (1 - share[1.0]):.1f}% of your tokens would be trained, and "
            "without the prompt's loss the weights move further from the pre-trained model.",
            f"Risk of PLW = 1 (train on everything): {100 * share[1.0]:.1f}% of the loss would be prompt text, so most of "
            "each update models prompts rather than answers; it scored below small weights on multiple-choice and "
            "short-generation benchmarks.",
        ]
    else:
        paragraphs += [
            f"LONG-COMPLETION DATA (R_g = {generation_ratio:.2f} >= 1): the study found no significant relationship "
            "between PLW and downstream scores on medium- and long-completion data, so the weight is a low-stakes "
            "choice here: the package default 0.1 and the usual 0 should both do. "
            f"For comparison, the study's R_g (Table 1): {STUDY_DATASETS}.",
            "Risk of PLW = 0 and of PLW = 1: small on this kind of data in the study. At PLW = 1, "
            f"{100 * share[1.0]:.1f}% of the loss would be prompt text; spend tuning effort on other hyperparameters first.",
        ]
    if 0.5 <= generation_ratio < 2.0:
        paragraphs.append(
            f"R_g is near the boundary of 1, and {100 * short_completion_row_share:.0f}% of rows have a shorter "
            f"completion than prompt (mean of per-row ratios {generation_ratio_mean_of_rows:.2f}). "
            "The study classified whole datasets; for mixed data, the short-completion rows are where the weight acts."
        )
    elif (generation_ratio < 1) != (generation_ratio_mean_of_rows < 1):
        paragraphs.append(
            f"The mean of per-row ratios ({generation_ratio_mean_of_rows:.2f}) falls on the other side of 1 than R_g: "
            f"lengths are skewed ({100 * short_completion_row_share:.0f}% of rows have a shorter completion than prompt). "
            "The study's R_g is the ratio of means."
        )
    if template_prompt_share >= TEMPLATE_ADVICE_FROM:
        template_tokens = template_prompt_share * prompt_tokens
        weight = 0.1
        on_template = weight * template_tokens / (weight * prompt_tokens + completion_tokens)
        paragraphs.append(
            f"TEMPLATE: {100 * template_prompt_share:.0f}% of the trained prompt ({template_tokens_per_row:.1f} tokens "
            "per row) is template and special tokens, not your data. R_g above leaves it out, as the study does; the "
            "trainer does not. At PLW > 0 the template is trained like the rest of the prompt: the model learns to "
            "repeat the same scaffolding in every row, which it soon predicts with little loss, while its tokens still "
            f"count in the loss's denominator. At PLW {weight:g}, {100 * on_template:.1f}% of the loss's weight falls on "
            f"template tokens and {100 * (share[weight] - on_template):.1f}% on your prompts' own text. With a shorter "
            "template more of each weight falls on your text (try it with --template)."
        )
    paragraphs += [
        *role_paragraphs,
        f"Share of the loss on prompt tokens (template included) by weight: {share_line}.",
        f"Source: {CITATION} (LLaMA 1 and 2 7B, Alpaca-style data, PLW swept from 0 to 1).",
    ]
    return paragraphs


def role_share_advice(shares: dict[str, float], at: str, *, conversational: bool) -> list[str]:
    """Paragraphs for roles that take a large share of the loss at the weights described by ``at``
    (``shares``: each role's share of the loss's total weight): a system prompt, and in conversations
    the chat template, with the key that leaves them out of the loss."""
    paragraphs = []
    system = shares.get("system", 0.0)
    if system >= ROLE_ADVICE_FROM:
        paragraphs.append(
            f"SYSTEM PROMPT: {100 * system:.0f}% of the loss at {at} falls on system prompt tokens. Practitioners "
            "report that a system prompt trained at any weight above 0 gets memorised verbatim: the same text in "
            "every row is soon predicted almost perfectly and recited, and it still takes this share of each update. "
            f"Set `system_loss_weight: 0` ({KEY_PLACES}; `--system-loss-weight 0` here shows the shares it leaves) "
            "to keep the system prompt in the context but out of the loss; `prompt_loss_weight` still weighs the "
            "user turns."
        )
    template = shares.get("template", 0.0)
    if conversational and template >= ROLE_ADVICE_FROM:
        paragraphs.append(
            f"CHAT TEMPLATE: {100 * template:.0f}% of the loss at {at} falls on the chat template's scaffolding and "
            "special tokens (role headers, turn markers), the same in every row. Set `template_loss_weight: 0` "
            f"({KEY_PLACES}; `--template-loss-weight 0` here shows the shares it leaves) to leave them out of the loss."
        )
    return paragraphs
