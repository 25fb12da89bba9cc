"""The one way bench scripts report: their figures as JSON on stdout, and the same text in a file
when asked (--json), so runs can be compared over time."""
from __future__ import annotations

import json
from pathlib import Path


def emit(out: dict, json_path: str | None = None, indent: int = 2) -> int:
    """Print `out` as JSON, also write it to json_path if given; returns the exit status 0."""
    text = json.dumps(out, indent=indent)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    return 0
