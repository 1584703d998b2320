"""Commissioning lists: many devices at once, from a CSV file or a JSON array.

CSV columns (header row required, order free): ``device_id``, ``kind``, ``district``, and
optionally ``lat`` and ``lon`` (both or neither), ``enabled`` (true/false, default true) and
``metadata`` (a JSON object). Every row is checked before anything is created; the errors name
the row (counting the header as row 1) so a whole district's file can be fixed in one go.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from devices.schemas import DeviceCreate

# Each device is a few broker commands, and the broker's store is rewritten after each: past a
# thousand a request would wait minutes (README, Security).
MAX_BULK_DEVICES: Final = 1000
REQUIRED_COLUMNS: Final = ("device_id", "kind", "district")
OPTIONAL_COLUMNS: Final = ("lat", "lon", "enabled", "metadata")
_TRUE: Final = {"true", "1", "yes"}
_FALSE: Final = {"false", "0", "no"}


class RowError(BaseModel):
    row: int
    field: str | None
    message: str


class BulkParseError(Exception):
    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} invalid row(s)")
        self.errors = errors


def _row_errors(row: int, exc: ValidationError) -> list[RowError]:
    return [
        RowError(row=row, field=".".join(str(part) for part in error["loc"]) or None,
                 message=error["msg"])
        for error in exc.errors()
    ]  # fmt: skip


def _csv_fields(raw: dict[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {name: raw[name] for name in REQUIRED_COLUMNS}
    lat, lon = (raw.get("lat") or "").strip(), (raw.get("lon") or "").strip()
    if lat or lon:
        fields["location"] = {"lat": lat or None, "lon": lon or None}
    enabled = (raw.get("enabled") or "").strip().lower()
    if enabled:
        fields["enabled"] = True if enabled in _TRUE else False if enabled in _FALSE else enabled
    metadata = (raw.get("metadata") or "").strip()
    if metadata:
        fields["metadata"] = json.loads(metadata)
    return fields


def _check_count(count: int) -> None:
    if count == 0:
        raise BulkParseError([RowError(row=0, field=None, message="no devices in the list")])
    if count > MAX_BULK_DEVICES:
        raise BulkParseError(
            [RowError(row=0, field=None, message=f"at most {MAX_BULK_DEVICES} devices at once")]
        )


def parse_csv(text: str) -> list[DeviceCreate]:
    try:
        return _parse_csv(text)
    except csv.Error as exc:
        # A broken line ends the reader: nothing after it can be trusted to be a row.
        raise BulkParseError([RowError(row=0, field=None, message=f"not CSV: {exc}")]) from exc


def _parse_csv(text: str) -> list[DeviceCreate]:
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or ())
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    unknown = sorted(columns - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS))
    if missing or unknown:
        problems = ([f"missing column(s): {', '.join(missing)}"] if missing else []) + (
            [f"unknown column(s): {', '.join(unknown)}"] if unknown else []
        )
        raise BulkParseError([RowError(row=1, field=None, message="; ".join(problems))])
    rows: list[tuple[int, DeviceCreate]] = []
    errors: list[RowError] = []
    for number, raw in enumerate(reader, start=2):
        if None in raw:
            errors.append(RowError(row=number, field=None, message="more values than columns"))
            continue
        try:
            rows.append((number, DeviceCreate.model_validate(_csv_fields(raw))))
        except ValidationError as exc:
            errors.extend(_row_errors(number, exc))
        except ValueError:
            errors.append(RowError(row=number, field="metadata", message="not a JSON object"))
    return _checked(rows, errors)


def parse_json(items: list[Any]) -> list[DeviceCreate]:
    rows: list[tuple[int, DeviceCreate]] = []
    errors: list[RowError] = []
    for number, item in enumerate(items):
        try:
            rows.append((number, DeviceCreate.model_validate(item)))
        except ValidationError as exc:
            errors.extend(_row_errors(number, exc))
    return _checked(rows, errors)


def _checked(rows: list[tuple[int, DeviceCreate]], errors: list[RowError]) -> list[DeviceCreate]:
    """Add the ids listed twice to the errors, and raise them all at once if there are any."""
    seen: set[str] = set()
    for number, device in rows:
        if device.device_id in seen:
            errors.append(
                RowError(row=number, field="device_id",
                         message=f"{device.device_id!r} is listed twice")
            )  # fmt: skip
        seen.add(device.device_id)
    if errors:
        raise BulkParseError(sorted(errors, key=lambda error: error.row))
    _check_count(len(rows))
    return [device for _, device in rows]
