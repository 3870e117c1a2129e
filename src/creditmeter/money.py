"""Micro-credit amounts: the one place that parses and formats credits.

Every amount inside creditmeter is an ``int`` of micro-credits (µc): 1 credit = 1,000,000 µc.
Text and JSON show credits as decimal strings with up to 6 places (``"12.5"``, ``"0.000125"``).
No float ever becomes an amount: a float given as input is read through its shortest ``repr``
(what JSON wrote) and must still have at most 6 decimal places.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

from creditmeter.errors import InputError

UC_PER_CREDIT = 1_000_000
MAX_CREDITS = 10**12
MAX_UC = MAX_CREDITS * UC_PER_CREDIT
_SCALE = Decimal(UC_PER_CREDIT)


def to_decimal(value: object, field: str) -> Decimal:
    """Read a number given as a string, int, Decimal or JSON float, exactly."""
    if isinstance(value, bool):
        raise InputError(field, "must be a number, not a boolean")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise InputError(field, f"{value!r} is not a number") from None
    else:
        raise InputError(field, f"must be a number, got {type(value).__name__}")
    if not number.is_finite():
        raise InputError(field, f"{value!r} is not a finite number")
    if number and not -40 <= number.adjusted() <= 40:
        # Far outside any amount or price; also keeps Decimal arithmetic from overflowing.
        raise InputError(field, f"{value!r} is out of range")
    if number.as_tuple().exponent < -40:  # type: ignore[operator]
        raise InputError(field, f"{value!r} has too many decimal places")
    return number


def parse_credits(value: object, field: str, *, allow_negative: bool = False,
                  allow_zero: bool = True) -> int:
    """Parse a credits amount (string or JSON number) into µc.

    Rejects more than 6 decimal places, negatives (unless allowed) and anything over 10^12 credits.
    """
    number = to_decimal(value, field)
    scaled = number * _SCALE
    if scaled != scaled.to_integral_value():
        raise InputError(field, f"{value} has more than 6 decimal places")
    uc = int(scaled)
    if uc < 0 and not allow_negative:
        raise InputError(field, f"must not be negative, got {value}")
    if uc == 0 and not allow_zero:
        raise InputError(field, "must be greater than zero")
    if abs(uc) > MAX_UC:
        raise InputError(field, f"must be at most {MAX_CREDITS} credits")
    return uc


def decimal_to_uc_ceil(number: Decimal) -> tuple[int, bool]:
    """Scale a credits Decimal to µc, rounding up; also tell whether rounding happened."""
    scaled = number * _SCALE
    rounded = scaled.to_integral_value(rounding=ROUND_CEILING)
    return int(rounded), rounded != scaled


def format_credits(uc: int) -> str:
    """Format µc as a credits string with no trailing zeros: 12_500_000 -> "12.5"."""
    sign = "-" if uc < 0 else ""
    whole, frac = divmod(abs(uc), UC_PER_CREDIT)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def format_credits_rounded(uc: int) -> str:
    """µc as credits for people: ``1234567891`` → ``"1,234.57"`` (2 places, half up, away from
    zero, thousands separators). A nonzero amount under 0.01 credits is shown exactly
    (``"0.000125"``) rather than as 0.00."""
    cent = UC_PER_CREDIT // 100
    if uc != 0 and abs(uc) < cent:
        return format_credits(uc)
    sign = "-" if uc < 0 else ""
    whole, frac = divmod((abs(uc) + cent // 2) // cent, 100)
    return f"{sign}{whole:,}.{frac:02d}"
