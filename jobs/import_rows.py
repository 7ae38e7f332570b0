"""Reading an import's rows: JSON Lines or CSV from a byte stream, one row at a time, each
checked against the job's answer spec into the values a task is made of, or into errors
nested by field like marshmallow's (CSV errors name CSV columns).

Row numbers are 1-based: the line number for JSON Lines (blank lines are skipped but
counted), the record number after the header for CSV. A row longer than MAX_ROW_BYTES is an
error without ever being held in memory whole.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from typing import IO, Any

import orjson

from jobs.answers import check_answer
from marketplace.errors import ValidationFailed
from marketplace.http import unstorable_values

NDJSON = "application/x-ndjson"
CSV = "text/csv"
MAX_ROW_BYTES = 1024 * 1024
MAX_EXTERNAL_ID = 200
PRIORITY_RANGE = (-100, 100)

_FIELDS = frozenset({"external_id", "payload", "gold_answer", "prelabel", "priority"})
_PRELABEL_FIELDS = frozenset({"answer", "confidence"})
_CSV_COLUMNS = frozenset(
    {"external_id", "payload", "gold_answer", "prelabel_answer", "prelabel_confidence", "priority"}
)
_BOM = b"\xef\xbb\xbf"

Errors = dict[Any, Any]
# (row number, the row as parsed (to name its external_id in errors), its values or None,
# its errors or None). Values: (external_id, payload, gold_answer, prelabel answer,
# prelabel confidence, priority).
Record = tuple[int, Any, tuple | None, Errors | None]


# --- checking one row --------------------------------------------------------------------


def unstorable(text: str) -> bool:
    return bool(unstorable_values(text))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_record(
    record: Any, spec: dict[str, Any], *, vetted: bool = False
) -> tuple[tuple | None, Errors | None]:
    """The row's values (external_id, payload, gold, prelabel, confidence, priority), or its
    errors, nested by field like marshmallow's. `vetted`: known to hold only storable values."""
    if not isinstance(record, dict):
        return None, {"_schema": ["Each row must be a JSON object."]}
    errors = {} if vetted else unstorable_values(record)
    if not _FIELDS.issuperset(record):
        for key in record.keys() - _FIELDS:
            if key not in errors and not unstorable(key):
                errors[key] = ["Unknown field."]
    problem = errors.setdefault  # the first problem found with a field is the one reported

    external_id = record.get("external_id")
    if external_id is not None and (
        not isinstance(external_id, str) or not 1 <= len(external_id) <= MAX_EXTERNAL_ID
    ):
        problem("external_id", [f"Must be a string of 1 to {MAX_EXTERNAL_ID} characters."])
    payload = record.get("payload")
    if payload is None:
        problem("payload", ["Missing data for required field."])
    elif not isinstance(payload, dict):
        problem("payload", ["Must be a JSON object."])
    gold = record.get("gold_answer")
    if gold is not None and (message := check_answer(spec, gold)):
        problem("gold_answer", [message[0].upper() + message[1:] + "."])
    prelabel, confidence = record.get("prelabel"), None
    if prelabel is not None:
        if not isinstance(prelabel, dict):
            problem("prelabel", ["Must be an object {answer, confidence}."])
        else:
            nested: Errors = {}
            if not _PRELABEL_FIELDS.issuperset(prelabel):
                nested = {key: ["Unknown field."] for key in prelabel.keys() - _PRELABEL_FIELDS}
            answer, confidence = prelabel.get("answer"), prelabel.get("confidence")
            if answer is None:
                nested["answer"] = ["Missing data for required field."]
            elif message := check_answer(spec, answer):
                nested["answer"] = [message[0].upper() + message[1:] + "."]
            if confidence is None:
                nested["confidence"] = ["Missing data for required field."]
            elif not _number(confidence) or not 0 <= confidence <= 1:
                nested["confidence"] = ["Must be a number from 0 to 1."]
            if nested and "prelabel" not in errors:
                errors["prelabel"] = nested
            prelabel = answer
    priority = record.get("priority")
    if priority is None:
        priority = 0
    elif (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]
    ):
        problem("priority", ["Must be a whole number from -100 to 100."])
    if errors:
        return None, errors
    confidence = float(confidence) if confidence is not None else None
    return (external_id, payload, gold, prelabel, confidence, priority), None


# --- reading the body ----------------------------------------------------------------------


def _lines(body: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) with the line ending; None for a line over MAX_ROW_BYTES, which
    is skipped without being held in memory."""
    number = 0
    while line := body.readline(MAX_ROW_BYTES + 1):
        number += 1
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        if len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):
            while (rest := body.readline(64 * 1024)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, line


def _too_long() -> Errors:
    return {"_schema": [f"The row is longer than {MAX_ROW_BYTES} bytes."]}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _Recheck(Exception):
    """A number that may not fit a column: parse the row the careful way."""


def _short_int(text: str) -> int:
    if len(text) > 18:  # maybe past int64
        raise _Recheck
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Recheck
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
# Most rows: numbers are vetted as they are parsed, and a row without a \u escape has no NUL
# or lone surrogate (raw control characters are not JSON), so the walk over every value that
# unstorable_values makes can be skipped.
_VETTING_DECODER = json.JSONDecoder(
    parse_int=_short_int, parse_float=_finite_float, parse_constant=_refuse_constant
)


def _parse_json(text: str, decoder: json.JSONDecoder = _DECODER) -> Any:
    """The JSON value, or raise ValueError naming the problem."""
    text = text.strip()
    try:
        value, end = decoder.raw_decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


# A run of 19 digits may be an integer past int64, which orjson would turn into a float.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def _parse_row(line: bytes) -> tuple[Any, bool]:
    """The row's JSON value, and whether it is known to hold only storable values."""
    if b"\\u" not in line and not _LONG_NUMBER.search(line):
        # Most rows: orjson parses them several times faster. With no \u escape there is no
        # NUL or lone surrogate, orjson refuses NaN and infinities, and every integer fits
        # int64: the row holds only storable values. Rows it refuses go the careful way below,
        # which names the problem.
        try:
            return orjson.loads(line), True
        except orjson.JSONDecodeError:
            pass
    text = line.decode("utf-8")
    if b"\\u" not in line:
        try:
            return _parse_json(text, _VETTING_DECODER), True
        except _Recheck:
            pass
    return _parse_json(text), False


def ndjson_records(body: IO[bytes], spec: dict[str, Any]) -> Iterator[Record]:
    for number, line in _lines(body):
        if line is None:
            yield number, None, None, _too_long()
            continue
        if not line.strip():
            continue
        try:
            record, vetted = _parse_row(line)
        except UnicodeDecodeError:
            yield number, None, None, {"_schema": ["The row is not valid UTF-8."]}
        except ValueError as error:
            yield number, None, None, {"_schema": [f"Not valid JSON: {error}."]}
        else:
            yield number, record, *_check_record(record, spec, vetted=vetted)


def csv_records(body: IO[bytes], spec: dict[str, Any]) -> Iterator[Record]:
    def text_lines() -> Iterator[str]:
        for number, line in _lines(body):
            if line is None:  # a CSV record may span lines, so one cannot simply be skipped
                raise ValidationFailed(
                    f"Line {number} is longer than {MAX_ROW_BYTES} bytes.",
                    errors={"body": [f"line {number} is too long"]},
                )
            # Invalid UTF-8 becomes lone surrogates, which the row check reports.
            yield line.decode("utf-8", "surrogateescape")

    reader = csv.reader(text_lines())
    header: list[str] | None = None
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            if header is None:
                raise ValidationFailed(
                    f"The CSV header cannot be read: {error}.", errors={"header": [str(error)]}
                ) from None
            row += 1
            yield row, None, None, {"_schema": [f"Not valid CSV: {error}."]}
            continue
        if header is None:
            if cells:
                header = _csv_header(cells)
            continue
        row += 1
        if cells:
            yield _csv_record(row, header, cells, spec)


def _csv_header(cells: list[str]) -> list[str]:
    header = [cell.strip() for cell in cells]
    problems = []
    if any(not name or unstorable_values(name) for name in header):
        problems.append("Every column needs a name (valid text).")
    if len(set(header)) != len(header):
        problems.append("Column names must be distinct.")
    data_columns = [name for name in header if name not in _CSV_COLUMNS]
    if "payload" in header and data_columns:
        problems.append(
            "With a payload column, other columns are not allowed: " + ", ".join(data_columns[:10])
        )
    if "payload" not in header and not data_columns:
        problems.append("Add a payload column (JSON) or data columns that become the payload.")
    if problems:
        raise ValidationFailed(
            "The CSV header is not usable. " + " ".join(problems), errors={"header": problems}
        )
    return header


def _csv_answer(text: str, spec: dict[str, Any]) -> Any:
    """A CSV answer cell: JSON when it is JSON that fits the spec, else the text itself, so
    `cat` works as well as `"cat"`."""
    try:
        value = _parse_json(text)
    except ValueError:
        return text
    if check_answer(spec, value) is not None and check_answer(spec, text) is None:
        return text
    return value


def _csv_record(row: int, header: list[str], cells: list[str], spec: dict[str, Any]) -> Record:
    if len(cells) != len(header):
        problem = f"The row has {len(cells)} fields; the header has {len(header)}."
        return row, None, None, {"_schema": [problem]}
    cell = dict(zip(header, cells, strict=True))
    errors: Errors = {}
    record: dict[str, Any] = {}
    if text := cell.get("external_id"):
        record["external_id"] = text
    if "payload" in cell:
        try:
            record["payload"] = _parse_json(cell["payload"])
        except ValueError as error:
            errors["payload"] = [f"Not valid JSON: {error}."]
    else:
        record["payload"] = {k: v for k, v in cell.items() if k not in _CSV_COLUMNS}
    if text := cell.get("gold_answer"):
        record["gold_answer"] = _csv_answer(text, spec)
    answer, confidence = cell.get("prelabel_answer"), cell.get("prelabel_confidence")
    if answer or confidence:
        prelabel = record["prelabel"] = {}
        if answer:
            prelabel["answer"] = _csv_answer(answer, spec)
        if confidence:
            try:
                prelabel["confidence"] = float(confidence)
            except ValueError:
                errors["prelabel_confidence"] = ["Not a number."]
                prelabel["confidence"] = 0.0
    if text := cell.get("priority", "").strip():
        try:
            record["priority"] = int(text)
        except ValueError:
            errors["priority"] = ["Must be a whole number from -100 to 100."]
    if errors:
        return row, record, None, errors
    values, errors = _check_record(record, spec)
    if errors:
        errors = _csv_names(errors, data_columns="payload" not in cell)
    return row, record, values, errors


def _csv_names(errors: Errors, data_columns: bool) -> Errors:
    """Errors named by CSV column: prelabel.answer is the prelabel_answer column, and a
    payload built from data columns names the column."""
    nested = errors.pop("prelabel", None)
    if isinstance(nested, dict):
        for key, messages in nested.items():
            errors[f"prelabel_{key}"] = messages
    elif nested is not None:
        errors["prelabel_answer"] = nested
    if data_columns and isinstance(errors.get("payload"), dict):
        errors.update(errors.pop("payload"))
    return errors
