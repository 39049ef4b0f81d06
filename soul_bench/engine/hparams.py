"""Type checks for method and optimiser hyper-parameters, against the defaults' types.

Values come from YAML configs and ``--hparam NAME.KEY=VALUE`` (parsed as YAML), so a typo like
``npo.beta=abc`` arrives as a string; it must fail before any work, in one line, not as a
TypeError deep inside a loss mid-run.
"""

from __future__ import annotations

from numbers import Real


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)  # YAML's true/false are ints to Python


def _describe(default) -> str | None:
    if isinstance(default, bool):
        return "true or false"
    if _is_number(default):
        return "a number"
    if isinstance(default, (tuple, list)) and default and all(map(_is_number, default)):
        return f"a list of {len(default)} numbers"
    return None


def check_types(owner: str, defaults: dict, values: dict) -> None:
    """Raise ValueError naming ``owner.key`` when a value's type does not fit its default's
    (number / true-false / list of numbers). Defaults of other types (strings, None) are not
    checked here: their owners validate them."""
    for key, value in values.items():
        want = _describe(defaults[key]) if key in defaults else None
        if want is None:
            continue
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif _is_number(default):
            ok = _is_number(value)
        else:
            ok = isinstance(value, (tuple, list)) and len(value) == len(default) and all(map(_is_number, value))
        if not ok:
            raise ValueError(f"hyper-parameter {owner}.{key} must be {want}, got {value!r}")
