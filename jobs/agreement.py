"""Agreement between non-categorical answers, and clustering votes into answer keys.

Categorical answers (single and multi choice) agree when their canonical keys are equal (a
multi-choice answer is its set of labels). The others agree above a job-set threshold
(`redundancy.agreement_threshold`): boxes and polygons by mean matched IoU (polygons by their
bounding boxes), spans by mean matched overlap, numbers within an absolute tolerance, text
when equal after normalising case, punctuation and white space.

Votes are clustered greedily: the answer agreeing with most others (earliest on ties) takes
every unassigned answer agreeing with it, and so on; each cluster is one candidate answer
for the posterior, represented by that first answer.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from jobs import answers

CATEGORICAL = ("single_choice", "multi_choice")
DEFAULT_THRESHOLD = {"bbox": 0.5, "polygon": 0.5, "spans": 0.5, "number": 0.5, "text": 1.0}


def _interval_overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def box_iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    inter = _interval_overlap((a["x"], a["x"] + a["w"]), (b["x"], b["x"] + b["w"])) * (
        _interval_overlap((a["y"], a["y"] + a["h"]), (b["y"], b["y"] + b["h"]))
    )
    union = a["w"] * a["h"] + b["w"] * b["h"] - inter
    return inter / union if union > 0 else 0.0


def span_overlap(a: dict[str, Any], b: dict[str, Any]) -> float:
    inter = _interval_overlap((a["start"], a["end"]), (b["start"], b["end"]))
    union = (a["end"] - a["start"]) + (b["end"] - b["start"]) - inter
    return inter / union if union > 0 else 0.0


def _polygon_box(polygon: dict[str, Any]) -> dict[str, Any]:
    xs = [p[0] for p in polygon["points"]]
    ys = [p[1] for p in polygon["points"]]
    return {"x": min(xs), "y": min(ys), "w": max(xs) - min(xs), "h": max(ys) - min(ys)}


def _matched_score(first: list, second: list, similarity) -> float:
    """Greedy one-to-one matching of same-label items: matched similarity over the larger count."""
    if not first and not second:
        return 1.0
    pairs = sorted(
        (
            (similarity(a, b), i, j)
            for i, a in enumerate(first)
            for j, b in enumerate(second)
            if a.get("label") == b.get("label")
        ),
        reverse=True,
    )
    used_a, used_b, total = set(), set(), 0.0
    for score, i, j in pairs:
        if score > 0 and i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            total += score
    return total / max(len(first), len(second))


def _normalise_text(value: str) -> str:
    value = unicodedata.normalize("NFKC", value).casefold()
    value = re.sub(r"[^\w\s]", "", value)
    return " ".join(value.split())


def agree(kind: str, a: Any, b: Any, threshold: float | None) -> bool:
    """Whether two valid answers of type `kind` count as the same answer."""
    if kind in CATEGORICAL:
        return answers.canonical(a) == answers.canonical(b)
    limit = DEFAULT_THRESHOLD.get(kind, 0.5) if threshold is None else threshold
    if kind == "number":
        return abs(float(a) - float(b)) <= limit
    if kind == "text":
        return _normalise_text(a) == _normalise_text(b)
    if kind == "bbox":
        return _matched_score(a, b, box_iou) >= limit
    if kind == "polygon":
        boxes_a = [{**_polygon_box(p), "label": p["label"]} for p in a]
        boxes_b = [{**_polygon_box(p), "label": p["label"]} for p in b]
        return _matched_score(boxes_a, boxes_b, box_iou) >= limit
    if kind == "spans":
        return _matched_score(a, b, span_overlap) >= limit
    return answers.canonical(a) == answers.canonical(b)


def cluster_keys(kind: str, values: list[Any], threshold: float | None) -> list[str]:
    """One answer key per value: values that agree (with their cluster's first) share a key."""
    if kind in CATEGORICAL:
        return [answers.canonical(v) for v in values]
    n = len(values)
    agrees = [[agree(kind, values[i], values[j], threshold) for j in range(n)] for i in range(n)]
    keys: list[str | None] = [None] * n
    while None in keys:
        free = [i for i in range(n) if keys[i] is None]
        leader = max(free, key=lambda i: (sum(agrees[i][j] for j in free), -i))
        key = answers.canonical(values[leader])
        for j in free:
            if agrees[leader][j]:
                keys[j] = key
    return [k for k in keys if k is not None]
