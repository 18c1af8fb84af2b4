"""bench.json -> markdown: the targets table and each section's table, and the section of docs/benchmarks.md that
holds one machine's figures (between markers, so the hand-written analysis around it survives a re-run)."""

from __future__ import annotations

import re
from pathlib import Path


def targets_table(targets: list[dict]) -> str:
    lines = ["| target | measured | goal | |", "| --- | ---: | --- | --- |"]
    for t in targets:
        state = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"| {t['target']} | {value} | {t['goal']} | {state} |")
    return "\n".join(lines)


def markdown(result: dict, command: str) -> str:
    """One run as markdown: command, machine, date, targets, then the decode, model and pipeline tables."""
    from .decode import decode_table
    from .models import models_table
    from .pipeline import pipeline_table

    m = result["machine"]
    where = f"{m['cpus']} CPUs ({m['cpu']})" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
    parts = [
        f"Command: `{command}`  ",
        f"Machine: {where}; Python {m['python']}, torch {m['torch']}, Ray {m['ray']}  ",
        f"Date: {result['date']}; every figure the median of {result['repeats']['figures']} runs "
        f"({result['repeats']['pipeline']} for the pipeline) with its spread, (max - min) / median",
        "",
        targets_table(result["targets"]),
    ]
    if "decode" in result:
        parts += ["", "#### Decode", "", f"Limit: {result['decode']['limit_tool']}", "", decode_table(result["decode"])]
    if "models" in result:
        parts += ["", "#### Models", "", models_table(result["models"])]
    if "pipeline" in result:
        parts += ["", "#### Pipeline and scaling", "", pipeline_table(result["pipeline"])]
    return "\n".join(parts) + "\n"


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"


def write_docs(path: str | Path, result: dict, command: str) -> str:
    """Put this run's markdown into `path` between its device's markers (bench:cpu or bench:cuda), replacing the
    previous run's; a file or section that does not exist yet is created. -> the section's key."""
    key = result["machine"]["device"]
    begin, end = _markers(key)
    block = f"{begin}\n{markdown(result, command)}{end}"
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + f"\n\n## Figures: {key}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return key
