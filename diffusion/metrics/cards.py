"""A gate's results file and its model card's ``model-index``: one record, written once, read by everyone.

Each gate's ``--write`` saves its figures as ``gate_results.json`` beside the weights and copies the headline
ones into the folder's ``README.md`` front matter as ``model-index`` results (huggingface_hub's
``EvalResult``), so the Hub page, the lessons and the documentation quote the same numbers.
"""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_FILE = "gate_results.json"


@dataclass(frozen=True)
class CardMetric:
    """One ``model-index`` row: the value at ``path`` (dotted keys) of the results record."""

    path: str
    name: str
    metric_type: str = "accuracy"


@dataclass(frozen=True)
class CardTask:
    """What the rows measure, as the Hub's model-index names it."""

    task_type: str  # e.g. "unconditional-image-generation"
    dataset_type: str
    dataset_name: str


def provenance(command: str) -> dict[str, str]:
    """When, where and how a record was measured (every figure carries its date and machine)."""
    import torch

    return {"measured": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()} {platform.processor() or platform.platform()}, torch {torch.__version__}",
            "command": command}


def value_at(record: dict[str, Any], path: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``; ``None`` where a key is missing."""
    value: Any = record
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def write_results(folder: Path, record: dict[str, Any], task: CardTask, metrics: Sequence[CardMetric],
                  dataset_args: dict[str, Any] | None = None) -> Path:
    """Save ``record`` as ``folder/gate_results.json`` and write ``metrics`` of it into ``folder/README.md``'s
    model-index (the card must exist). Returns the results file."""
    from huggingface_hub import EvalResult, ModelCard

    target = folder / RESULTS_FILE
    target.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    card = ModelCard.load(folder / "README.md")
    results = []
    for metric in metrics:
        value = value_at(record, metric.path)
        if value is None:
            continue
        results.append(EvalResult(task_type=task.task_type, dataset_type=task.dataset_type,
                                  dataset_name=task.dataset_name, dataset_args=dataset_args or None,
                                  metric_type=metric.metric_type, metric_name=metric.name, metric_value=value,
                                  metric_config=f"measured {record['measured']}"))
    card.data.model_name = record["model"]
    card.data.eval_results = results
    card.save(folder / "README.md")
    return target


def results_table(record: dict[str, Any], metrics: Sequence[CardMetric]) -> str:
    """The card's rows of ``record`` as a Markdown table headed by where and when they were measured: the
    documentation shows this block as is (a test renders it again from the file and compares)."""
    lines = [f"| {record['model']}: `{record['command']}`, {record['measured']}, {record['machine']} | value |",
             "|---|---|"]
    for metric in metrics:
        value = value_at(record, metric.path)
        if value is not None:
            lines.append(f"| {metric.name} | {value:g} |")
    return "\n".join(lines) + "\n"
