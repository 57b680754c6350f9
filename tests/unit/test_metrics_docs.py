"""docs/http.md's metrics table is the reference operators alert from: every metric the
runner defines is in it, with its type and labels, and it names no metric that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from runner import metrics

DOC = Path(__file__).parents[2] / "docs" / "http.md"
ROW = re.compile(r"^\| `(runner_[a-z_]+)` \| (\w+) \|([^|]*)\|", re.M)


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    documented = {
        name: (kind, tuple(re.findall(r"`(\w+)`", labels)))
        for name, kind, labels in ROW.findall(DOC.read_text())
    }
    defined = {name: (kind, labels) for name, (kind, _help, labels) in metrics.DEFINITIONS.items()}
    assert documented == defined
