"""Validation of numeric options, shared by the APIs and tools that take them from users."""
import math
import numbers
from typing import Optional


def check_number(name: str,
                 value,
                 low: Optional[float] = None,
                 high: Optional[float] = None,
                 low_open: bool = False,
                 high_open: bool = False,
                 integer: bool = False):
    """Check that an option is a finite number (an int when ``integer``) within bounds.

    NaN compares false with everything, so a check written as ``if value < low: raise`` lets it through and the
    option silently does nothing; this one rejects it, and infinities, by name.

    Args:
        name (str): The option's name, for the message.
        value: The value given.
        low (float, optional): Least allowed value. Defaults to None (no bound).
        high (float, optional): Greatest allowed value. Defaults to None (no bound).
        low_open (bool): Whether ``low`` itself is excluded. Defaults to False.
        high_open (bool): Whether ``high`` itself is excluded. Defaults to False.
        integer (bool): Whether the value must be an int. Defaults to False.

    Returns:
        int | float: ``value``.

    Raises:
        ValueError: Naming the option, what was given and what is allowed.
    """
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = '' if low is None else f'{"(" if low_open else "["}{low}'
        hi = '' if high is None else f'{high}{")" if high_open else "]"}'
        bounds = f' in {lo or "(-inf"}, {hi or "inf)"}' if low is not None or high is not None else ''
        raise ValueError(f'{name} must be a finite {"int" if integer else "number"}{bounds}, but got {value!r}')
    return value
