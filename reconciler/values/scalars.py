"""Strict scalar types shared by the spec models and the project settings.

YAML `r: "8"` is a string; a string where a number belongs is a mistake we report rather than
guess at. Floats accept YAML integers but not infinities or NaN.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AllowInfNan, Strict

Str = Annotated[str, Strict()]
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), AllowInfNan(False)]
Bool = Annotated[bool, Strict()]
