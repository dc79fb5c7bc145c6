"""What ``plw-plugins demo`` prints and draws from its measurements: the table, one line saying what
the numbers show (computed from them), a note when the prompt loss at PLW 0 rose, and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = (
    ("train_prompt_loss", "train prompt"),
    ("train_completion_loss", "train completion"),
    ("held_out_prompt_loss", "held-out prompt"),
    ("held_out_completion_loss", "held-out completion"),
    ("general_text_loss", "general text"),
    ("weight_distance", "weight change"),
)
PANELS = (
    ("train_prompt_loss", "training prompt loss"),
    ("train_completion_loss", "training completion loss"),
    ("held_out_completion_loss", "held-out completion loss"),
    ("held_out_prompt_loss", "held-out prompt loss"),
    ("general_text_loss", "held-out general text loss (forgetting)"),
    ("weight_distance", "weight change from the start (relative L2)"),
)


def format_table(results: list[Any], class_sizes: dict[str, int]) -> str:
    """A first row with the start (the same model for every weight), then one row per weight.
    Columns by length class appear only when the held-out rows fall in more than one."""
    classes = list(class_sizes) if len(class_sizes) > 1 else []
    header = ["PLW", *(label for _, label in COLUMNS)]
    header += [f"held-out completion, {name} ({class_sizes[name]} rows)" for name in classes]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    start = results[0].start
    lines.append("| start | " + " | ".join(f"{getattr(start, key):.3f}" for key, _ in COLUMNS) + " |" + " - |" * len(classes))
    for result in results:
        cells = [f"{result.prompt_loss_weight:g}", *(f"{getattr(result.end, key):.3f}" for key, _ in COLUMNS)]
        cells += [f"{result.held_out_completion_loss_by_class[name]:.3f}" for name in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best(results: list[Any], value) -> Any:  # noqa: ANN001
    return min(results, key=value)


def what_the_numbers_show(results: list[Any]) -> str:
    """One line naming, from the numbers, which weight moved the weights least, forgot the least
    general text, memorised the least (held-out minus training completion loss) and generalised best,
    and whether the study's §5.3 mechanism shows here."""
    if len(results) < 2:
        return "One weight only: run several (--weights 0,0.1,1) to compare."
    closest = _best(results, lambda r: r.end.weight_distance)
    forgot_least = _best(results, lambda r: r.end.general_text_loss)
    gap = {r.prompt_loss_weight: r.end.held_out_completion_loss - r.end.train_completion_loss for r in results}
    memorised_least = _best(results, lambda r: gap[r.prompt_loss_weight])
    best = _best(results, lambda r: r.end.held_out_completion_loss)
    line = (
        f"What the numbers show: the weights moved least at PLW {closest.prompt_loss_weight:g} "
        f"({closest.end.weight_distance:.3f}), general text was forgotten least at PLW {forgot_least.prompt_loss_weight:g} "
        f"({forgot_least.end.general_text_loss:.3f}, {results[0].start.general_text_loss:.3f} at the start), the gap "
        f"between held-out and training completion loss (memorisation) was smallest at PLW "
        f"{memorised_least.prompt_loss_weight:g} ({gap[memorised_least.prompt_loss_weight]:+.3f}), and the held-out "
        f"completion loss was lowest at PLW {best.prompt_loss_weight:g} ({best.end.held_out_completion_loss:.3f})."
    )
    zero = next((r for r in results if r.prompt_loss_weight == 0), None)
    small = [r for r in results if 0 < r.prompt_loss_weight < 1]
    if zero is not None and small:
        nearer = [r for r in small if r.end.weight_distance < zero.end.weight_distance]
        if nearer:
            verdict = f"as the study found (§5.3), PLW {', '.join(f'{r.prompt_loss_weight:g}' for r in nearer)} kept the weights closer to the start than PLW 0"
        else:
            verdict = "unlike the study (§5.3), no small non-zero PLW kept the weights closer to the start than PLW 0"
        line = f"{line[:-1]}; {verdict}."
    return line


def prompt_loss_rise_note(results: list[Any]) -> str | None:
    """A sentence when the training prompt loss at PLW 0 ended above its level at the start."""
    zero = next((r for r in results if r.prompt_loss_weight == 0), None)
    if zero is None or zero.end.train_prompt_loss <= zero.start.train_prompt_loss:
        return None
    return (
        f"Note: at PLW 0 the training prompt loss rose from {zero.start.train_prompt_loss:.3f} at the start to "
        f"{zero.end.train_prompt_loss:.3f}. Nothing trains the prompt tokens at PLW 0, so the updates made for the "
        "completions are free to unlearn how the prompts read: the model forgets part of what it knew."
    )


def plot_curves(results: list[Any], path: Path, title: str) -> None:
    """Six panels against the step: the training losses, the held-out completion and prompt losses,
    the held-out general-text loss and the weight change from the start. Raises ``ImportError``
    without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, grid = plt.subplots(2, 3, figsize=(15, 8.4))
    axes = grid.ravel()
    colors = plt.get_cmap("viridis")
    for index, result in enumerate(results):
        color = colors(index / max(1, len(results) - 1) * 0.9)
        for axis, (key, _) in zip(axes, PANELS):
            points = result.curves[key]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o" if len(points) < 12 else None, markersize=3, color=color,
                          label=f"PLW {result.prompt_loss_weight:g}")
    for axis, (key, label) in zip(axes, PANELS):
        axis.set_title(label)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("relative L2 distance" if key == "weight_distance" else "mean NLL per token")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
