"""Auto-scoring of assessment answers. Pure functions: (question, answer) → correct?"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from credentials.models import AssessmentQuestion, QuestionKind


class AnswerShapeError(ValueError):
    """The answer does not have the shape the question asks for."""


def normalise_text(value: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form of a text answer."""
    value = unicodedata.normalize("NFKD", value)
    value = "".join(c for c in value if not unicodedata.combining(c))
    value = re.sub(r"[^\w\s]", " ", value.casefold())
    return " ".join(value.split())


def iou(a: dict[str, float], b: dict[str, float]) -> float:
    """Intersection over union of two boxes {x, y, w, h}."""
    ax2, ay2 = a["x"] + a["w"], a["y"] + a["h"]
    bx2, by2 = b["x"] + b["w"], b["y"] + b["h"]
    iw = max(0.0, min(ax2, bx2) - max(a["x"], b["x"]))
    ih = max(0.0, min(ay2, by2) - max(a["y"], b["y"]))
    inter = iw * ih
    union = a["w"] * a["h"] + b["w"] * b["h"] - inter
    return inter / union if union > 0 else 0.0


def _box(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not {"x", "y", "w", "h"} <= set(value):
        raise AnswerShapeError("A box is {x, y, w, h}.")
    box = {}
    for key in ("x", "y", "w", "h"):
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise AnswerShapeError(f"Box field {key} must be a number.")
        if not math.isfinite(number) or (key in "wh" and number <= 0):
            raise AnswerShapeError(f"Box field {key} must be finite (and positive for w, h).")
        box[key] = float(number)
    return box


def check_shape(question: AssessmentQuestion, answer: Any) -> None:
    """Raise AnswerShapeError when `answer` cannot be an answer to `question`."""
    kind = question.kind
    options = (question.content or {}).get("options", [])
    if kind == QuestionKind.SINGLE_CHOICE:
        if not isinstance(answer, str) or answer not in options:
            raise AnswerShapeError("Pick one of the options.")
    elif kind == QuestionKind.MULTI_CHOICE:
        if not isinstance(answer, list) or not all(isinstance(a, str) for a in answer):
            raise AnswerShapeError("Give a list of options.")
        if len(set(answer)) != len(answer) or not set(answer) <= set(options):
            raise AnswerShapeError("Each option at most once, and only listed options.")
    elif kind == QuestionKind.NUMERIC:
        if isinstance(answer, bool) or not isinstance(answer, int | float):
            raise AnswerShapeError("Give a number.")
        if not math.isfinite(answer):
            raise AnswerShapeError("Give a finite number.")
    elif kind in (QuestionKind.TEXT, QuestionKind.FREE_TEXT):
        if not isinstance(answer, str) or len(answer) > 10_000:
            raise AnswerShapeError("Give text of at most 10,000 characters.")
    elif kind == QuestionKind.BBOX:
        _box(answer)


def auto_score(question: AssessmentQuestion, answer: Any) -> bool | None:
    """True/False for auto-scored kinds; None when a person must grade it (free text)."""
    check_shape(question, answer)
    key = question.answer_key
    kind = question.kind
    if kind == QuestionKind.SINGLE_CHOICE:
        return answer == key
    if kind == QuestionKind.MULTI_CHOICE:
        return set(answer) == set(key)
    if kind == QuestionKind.NUMERIC:
        return abs(float(answer) - float(key)) <= (question.tolerance or 0.0)
    if kind == QuestionKind.TEXT:
        accepted = key if isinstance(key, list) else [key]
        return normalise_text(answer) in {normalise_text(a) for a in accepted}
    if kind == QuestionKind.BBOX:
        return iou(_box(answer), _box(key)) >= (question.iou_threshold or 0.5)
    return None


def check_answer_key(kind: QuestionKind, content: dict[str, Any], key: Any) -> str | None:
    """Why an answer key cannot belong to a question of this kind, or None when it can."""
    options = content.get("options")
    if kind in (QuestionKind.SINGLE_CHOICE, QuestionKind.MULTI_CHOICE) and (
        not isinstance(options, list)
        or len(options) < 2
        or not all(isinstance(o, str) for o in options)
        or len(set(options)) != len(options)
    ):
        return "content.options must list at least two distinct strings"
    if kind == QuestionKind.SINGLE_CHOICE and key not in options:
        return "answer_key must be one of the options"
    if kind == QuestionKind.MULTI_CHOICE and (
        not isinstance(key, list) or not key or not set(key) <= set(options)
    ):
        return "answer_key must be a non-empty list of options"
    if kind == QuestionKind.NUMERIC and (
        isinstance(key, bool) or not isinstance(key, int | float) or not math.isfinite(key)
    ):
        return "answer_key must be a number"
    if kind == QuestionKind.TEXT and not (
        isinstance(key, str)
        or (isinstance(key, list) and key and all(isinstance(k, str) for k in key))
    ):
        return "answer_key must be a string or a list of accepted strings"
    if kind == QuestionKind.BBOX:
        try:
            _box(key)
        except AnswerShapeError as error:
            return f"answer_key: {error}"
    return None
