"""Enum columns stored as VARCHAR + CHECK, so adding a value is a plain migration everywhere."""

from __future__ import annotations

import enum

from sqlalchemy import Enum


def enum_column(cls: type[enum.Enum], name: str, length: int = 24) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda e: [m.value for m in e],
    )
