"""Plain-text/Markdown tables of metric summaries, always printed with their conventions."""

from __future__ import annotations

from dmfnet_edge.metrics.fusion import METRIC_NAMES


def markdown_table(rows: dict[str, dict[str, float]], first_column: str = "task", digits: int = 4) -> str:
    """One row per key, one column per metric (METRIC_NAMES order)."""
    head = f"| {first_column} | " + " | ".join(METRIC_NAMES) + " |"
    rule = "|---" * (len(METRIC_NAMES) + 1) + "|"
    body = [f"| {name} | " + " | ".join(f"{values[m]:.{digits}f}" for m in METRIC_NAMES) + " |"
            for name, values in rows.items()]
    return "\n".join([head, rule, *body])
