"""Answer specifications: checking a spec when a job is posted, and every answer against it.

Each checker returns None when the value is fine, or a sentence saying what is wrong.
"""

from __future__ import annotations

import math
from typing import Any

TYPES = ("single_choice", "multi_choice", "text", "number", "bbox", "polygon", "spans")
MAX_SHAPES = 500


def _labels_problem(spec: dict[str, Any]) -> str | None:
    labels = spec.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(label, str) and label for label in labels)
        or len(set(labels)) != len(labels)
        or len(labels) > 1000
    ):
        return "labels must be a list of 1 to 1000 distinct non-empty strings"
    return None


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def check_spec(spec: Any) -> str | None:
    """Why `spec` is not a usable answer specification, or None."""
    if not isinstance(spec, dict):
        return "answer_spec must be an object"
    kind = spec.get("type")
    if kind not in TYPES:
        return f"type must be one of {', '.join(TYPES)}"
    allowed = {
        "single_choice": {"type", "labels"},
        "multi_choice": {"type", "labels", "min_selected", "max_selected"},
        "text": {"type", "max_length", "min_length"},
        "number": {"type", "min", "max", "integer"},
        "bbox": {"type", "labels", "max_boxes", "min_boxes"},
        "polygon": {"type", "labels", "max_polygons", "min_polygons"},
        "spans": {"type", "labels", "max_spans"},
    }[kind]
    if extra := set(spec) - allowed:
        return f"unknown keys for {kind}: {', '.join(sorted(extra))}"
    labelled = kind in ("single_choice", "multi_choice", "bbox", "polygon", "spans")
    if labelled and (problem := _labels_problem(spec)):
        return problem
    if kind == "text":
        max_length = spec.get("max_length", 10_000)
        if (
            not isinstance(max_length, int)
            or isinstance(max_length, bool)
            or not 1 <= max_length <= 100_000
        ):
            return "max_length must be an integer from 1 to 100000"
    if kind == "number":
        low, high = spec.get("min"), spec.get("max")
        for name, value in (("min", low), ("max", high)):
            if value is not None and not _number(value):
                return f"{name} must be a finite number"
        if low is not None and high is not None and low > high:
            return "min must not exceed max"
    return None


def _box(value: Any, labels: list[str]) -> str | None:
    if not isinstance(value, dict) or set(value) - {"x", "y", "w", "h", "label"}:
        return "each box is {x, y, w, h, label}"
    for key in ("x", "y", "w", "h"):
        if not _number(value.get(key)):
            return f"box {key} must be a finite number"
    if value["w"] <= 0 or value["h"] <= 0:
        return "box w and h must be positive"
    if value.get("label") not in labels:
        return "box label must be one of the job's labels"
    return None


def _polygon(value: Any, labels: list[str]) -> str | None:
    if not isinstance(value, dict) or set(value) - {"points", "label"}:
        return "each polygon is {points: [[x, y], ...], label}"
    points = value.get("points")
    if not isinstance(points, list) or not 3 <= len(points) <= 1000:
        return "a polygon has 3 to 1000 points"
    for point in points:
        if not isinstance(point, list) or len(point) != 2 or not all(_number(c) for c in point):
            return "each point is [x, y] with finite numbers"
    if value.get("label") not in labels:
        return "polygon label must be one of the job's labels"
    return None


def _span(value: Any, labels: list[str]) -> str | None:
    if not isinstance(value, dict) or set(value) - {"start", "end", "label"}:
        return "each span is {start, end, label}"
    start, end = value.get("start"), value.get("end")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        return "span start and end must be integers"
    if not 0 <= start < end:
        return "a span needs 0 <= start < end"
    if value.get("label") not in labels:
        return "span label must be one of the job's labels"
    return None


def check_answer(spec: dict[str, Any], answer: Any) -> str | None:
    """Why `answer` does not satisfy `spec`, or None."""
    kind = spec["type"]
    labels = spec.get("labels", [])
    if kind == "single_choice":
        return (
            None
            if isinstance(answer, str) and answer in labels
            else (f"answer must be one of: {', '.join(labels[:20])}")
        )
    if kind == "multi_choice":
        if not isinstance(answer, list) or not all(isinstance(a, str) for a in answer):
            return "answer must be a list of labels"
        if len(set(answer)) != len(answer):
            return "each label at most once"
        if unknown := [a for a in answer if a not in labels]:
            return f"unknown labels: {', '.join(unknown[:5])}"
        low, high = spec.get("min_selected", 0), spec.get("max_selected", len(labels))
        if not low <= len(answer) <= high:
            return f"select between {low} and {high} labels"
        return None
    if kind == "text":
        if not isinstance(answer, str):
            return "answer must be a string"
        if len(answer) > spec.get("max_length", 10_000):
            return f"answer is longer than {spec.get('max_length', 10_000)} characters"
        if len(answer.strip()) < spec.get("min_length", 1):
            return "answer is empty"
        return None
    if kind == "number":
        if not _number(answer):
            return "answer must be a finite number"
        if spec.get("integer") and not float(answer).is_integer():
            return "answer must be a whole number"
        if spec.get("min") is not None and answer < spec["min"]:
            return f"answer must be at least {spec['min']}"
        if spec.get("max") is not None and answer > spec["max"]:
            return f"answer must be at most {spec['max']}"
        return None
    checker, noun, limit = {
        "bbox": (_box, "boxes", spec.get("max_boxes", MAX_SHAPES)),
        "polygon": (_polygon, "polygons", spec.get("max_polygons", MAX_SHAPES)),
        "spans": (_span, "spans", spec.get("max_spans", MAX_SHAPES)),
    }[kind]
    if not isinstance(answer, list):
        return f"answer must be a list of {noun}"
    if len(answer) > limit:
        return f"at most {limit} {noun}"
    for index, item in enumerate(answer):
        if problem := checker(item, labels):
            return f"item {index}: {problem}"
    return None


def canonical(answer: Any) -> str:
    """A stable key for comparing answers (multi-choice order does not matter)."""
    import json

    if isinstance(answer, list) and all(isinstance(a, str) for a in answer):
        answer = sorted(answer)
    return json.dumps(answer, sort_keys=True, separators=(",", ":"))
