"""Type checks for method and optimiser hyper-parameters, against the defaults' types.

Values come from YAML configs and ``--hparam NAME.KEY=VALUE`` (parsed as YAML), so a typo like
``npo.beta=abc`` arrives as a string; it must fail before any work, in one line, not as a
TypeError deep inside a loss mid-run.
"""

from __future__ import annotations

from numbers import Real


def _describe(default) -> str | None:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, Real):
        return "a number"
    if isinstance(default, (tuple, list)) and default and all(isinstance(v, Real) and not isinstance(v, bool) for v in default):
        return f"a list of {len(default)} numbers"
    return None


def check_types(owner: str, defaults: dict, values: dict) -> None:
    """Raise ValueError naming ``owner.key`` when a value's type does not fit its default's
    (number / true-false / list of numbers). Defaults of other types (strings, None) are not
    checked here: their owners validate them."""
    for key, value in values.items():
        if key not in defaults:
            continue
        default, want = defaults[key], _describe(defaults[key])
        if want is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, Real):
            ok = isinstance(value, Real) and not isinstance(value, bool)
        else:
            ok = (isinstance(value, (tuple, list)) and len(value) == len(default)
                  and all(isinstance(v, Real) and not isinstance(v, bool) for v in value))
        if not ok:
            raise ValueError(f"hyper-parameter {owner}.{key} must be {want}, got {value!r}")
