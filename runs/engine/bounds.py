"""Size and work bounds for expressions and templates.

Every operation that can build something big (repetition, concatenation, padding, format
widths, filters, string methods) asks this module for the size of its result *before* making
it, and is refused with `expression_limit` when that size passes the per-value cap. One
evaluation also has a budget of work (bytes built, template nodes run), so a loop cannot
spend minutes under the cap one small value at a time.

Sizes are JSON-ish byte counts of the value fully expanded: `[x] * 1000` counts x a thousand
times, as storing it would, but measuring it visits x once (shared objects are memoised).
The engine stays pure: the cap is set once per process with `configure()`.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .errors import ExpressionLimit

DEFAULT_MAX_VALUE_BYTES = 1_000_000
# Multiplying two 64k-bit ints takes microseconds; 2 ** 10**6 took seconds and ((2**1000)**1000)
# **1000 held the GIL for 20 s. Also 19k decimal digits, well past Python's str conversion limit.
MAX_INT_BITS = 65_536
# Bytes one evaluation may build in total, as a multiple of the per-value cap.
WORK_FACTOR = 8
# Template nodes one evaluation may run (each loop iteration costs its body's node count).
MAX_STEPS = 250_000
# Input size for filters that are slow per character (pure Python or regex heavy).
MAX_COSTLY_INPUT = 100_000
COSTLY_WORK_FACTOR = 10
MAX_DEPTH = 500

_settings = {"max_value_bytes": DEFAULT_MAX_VALUE_BYTES}


def configure(*, max_value_bytes: int) -> None:
    """Set the per-value cap for this process (the Django app does it from settings)."""
    if int(max_value_bytes) < 1:
        raise ValueError("max_value_bytes must be positive")
    _settings["max_value_bytes"] = int(max_value_bytes)


def max_value_bytes() -> int:
    return _settings["max_value_bytes"]


class Budget:
    """What one evaluation may still build and run."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.work = cap * WORK_FACTOR
        self.steps = MAX_STEPS

    def allow(self, size: int, what: str) -> None:
        """Refuse `what` if its result would be `size` bytes, over the per-value cap."""
        if size > self.cap:
            raise ExpressionLimit(
                f"{what} would build about {size:,} bytes, over the {self.cap:,}-byte limit "
                "per value",
                limit="max_value_bytes",
            )

    def charge(self, size: int, what: str) -> None:
        """`allow`, then count the bytes against this evaluation's total."""
        if size > self.cap:
            self.allow(size, what)
        self.spend(size, what)

    def spend(self, size: int, what: str) -> None:
        """Count work against this evaluation's total without a per-value check."""
        self.work -= size
        if self.work < 0:
            raise ExpressionLimit(
                f"{what}: the expression built more than {self.cap * WORK_FACTOR:,} bytes in total",
                limit="work",
            )

    def step(self, cost: int = 1) -> None:
        self.steps -= cost
        if self.steps < 0:
            raise ExpressionLimit(
                f"the expression ran more than {MAX_STEPS:,} steps (loops, calls)", limit="steps"
            )

    def size(self, value: Any, what: str, factor: int = 1) -> int:
        """The size of `value` (an input of `what`), refused past the cap."""
        size = size_of(value, self.cap // factor + 1) * factor
        self.allow(size, what)
        return size


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("budget", default=None)


def budget() -> Budget:
    # Outside an evaluation (Jinja folding constants at compile time) every check stands alone.
    return _current.get() or Budget(max_value_bytes())


@contextmanager
def bounded() -> Iterator[Budget]:
    """A fresh budget for one evaluation or render."""
    fresh = Budget(max_value_bytes())
    token = _current.set(fresh)
    try:
        yield fresh
    finally:
        _current.reset(token)


# --- sizes ------------------------------------------------------------------------------------


def size_of(value: Any, limit: int) -> int:
    """JSON-ish size of `value` fully expanded; stops counting soon after passing `limit`."""
    return _size(value, limit, {}, 0)


def _size(value: Any, limit: int, memo: dict[int, int], depth: int) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) + 2
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() * 3 // 10 + 2
    if isinstance(value, float):
        return 24
    if isinstance(value, range):
        digits = max(len(str(value.start)), len(str(value.stop))) + 2
        return len(value) * digits + 2
    container = isinstance(value, (Mapping, list, tuple, set, frozenset))
    if not container and type(value).__name__ not in ("dict_keys", "dict_values", "dict_items"):
        return 16  # undefined, macros, generators (measured by whoever consumes them)
    key = id(value)
    if key in memo:
        return memo[key]
    if depth > MAX_DEPTH:
        raise ExpressionLimit(f"value nested more than {MAX_DEPTH} levels deep", limit="depth")
    total = 2
    if isinstance(value, Mapping):
        for k, v in value.items():
            total += _size(k, limit, memo, depth + 1) + _size(v, limit, memo, depth + 1) + 2
            if total > limit:
                return total
    else:
        for item in value:
            # Scalars inline: this loop runs over every list an expression builds.
            kind = type(item)
            if kind is str:
                total += len(item) + 3
            elif kind is int:
                total += item.bit_length() * 3 // 10 + 3
            elif kind is float:
                total += 25
            else:
                total += _size(item, limit, memo, depth + 1) + 1
            if total > limit:
                return total
    memo[key] = total
    return total


def text_of(value: Any, b: Budget, what: str) -> str:
    """`str(value)`, measured first: str() of a list expands every shared element."""
    if isinstance(value, str):
        return value
    b.size(value, what)
    text = str(value)
    b.charge(len(text), what)
    return text


def take(iterable: Iterable[Any], b: Budget, what: str) -> list[Any]:
    """Materialise an iterable one step per item (generators cannot be measured up front)."""
    if isinstance(iterable, (list, tuple)):
        return list(iterable)
    items = []
    for item in iterable:
        b.step()
        items.append(item)
    return items


# --- operators --------------------------------------------------------------------------------


def check_int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise ExpressionLimit(
            f"{what} would make an integer of about {bits:,} bits, over the limit of "
            f"{MAX_INT_BITS:,}",
            limit="int_bits",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


def check_mul(left: Any, right: Any, b: Budget) -> None:
    if _is_int(left) and _is_int(right):
        check_int_bits(left.bit_length() + right.bit_length(), "`*`")
        return
    for seq, count in ((left, right), (right, left)):
        if _is_int(count) and isinstance(seq, (str, bytes, list, tuple)):
            if count <= 0:
                return
            b.charge((size_of(seq, b.cap // count + 3) - 2) * count + 2, "`*`")
            return


def check_pow(base: Any, exp: Any) -> None:
    if _is_int(base) and _is_int(exp) and exp > 0 and abs(base) > 1:
        # bit_length(base ** exp) <= bit_length(base) * exp: checked without computing it.
        check_int_bits(base.bit_length() * exp, "`**`")


def check_add(left: Any, right: Any, b: Budget) -> None:
    sequences = (str, bytes, list, tuple)
    if isinstance(left, sequences) and isinstance(right, sequences):
        size = size_of(left, b.cap + 1) + size_of(right, b.cap + 1)
        b.charge(size, "`+`")


def concat(values: tuple[Any, ...], b: Budget) -> str:
    """`a ~ b ~ c`: each part converted and counted before the next is made."""
    b.step(len(values))
    parts = []
    total = 0
    for value in values:
        part = text_of(value, b, "`~`")
        total += len(part)
        b.allow(total, "`~`")
        parts.append(part)
    b.charge(total, "`~`")
    return "".join(parts)


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def check_printf(fmt: str, args: Any, b: Budget) -> None:
    """`'%5000000000s' % x`: an upper bound of the result from the directives and arguments."""
    values = list(args.values()) if isinstance(args, Mapping) else args
    values = list(values) if isinstance(values, tuple) else [values]
    widest = max((size_of(v, b.cap + 1) * 4 for v in values), default=0)
    star = max((abs(v) for v in values if _is_int(v)), default=0)
    total = len(fmt)
    for width, precision, _conv in _PRINTF.findall(fmt):
        for number in (width, precision):
            total += star if number == "*" else int(number or 0)
        total += widest + 330  # a float's digits
        b.allow(total, "`%` formatting")
    b.charge(total, "`%` formatting")


_SPEC_NUMBERS = re.compile(r"\d+")


def check_format_field(spec: str, value: Any, b: Budget, sofar: int) -> int:
    """One `{...}` of `str.format`: width and precision are read from its spec before use."""
    size = sum(int(n) for n in _SPEC_NUMBERS.findall(spec)) + size_of(value, b.cap + 1) * 4 + 330
    b.allow(sofar + size, "`format`")
    return size


# --- string and other builtin methods ---------------------------------------------------------


def _int_arg(args: tuple, kwargs: dict, index: int, name: str, default: int) -> int:
    value = args[index] if len(args) > index else kwargs.get(name, default)
    return value if _is_int(value) else default


def _method_size(obj: Any, name: str, args: tuple, kwargs: dict, b: Budget) -> int | None:
    """An upper bound of what `obj.name(*args, **kwargs)` builds; None: nothing to check."""
    if isinstance(obj, str):
        n = len(obj)
        if name in ("center", "ljust", "rjust", "zfill"):
            return max(n, _int_arg(args, kwargs, 0, "width", 0))
        if name == "expandtabs":
            return n + obj.count("\t") * max(_int_arg(args, kwargs, 0, "tabsize", 8), 0)
        if name == "replace" and len(args) >= 2:
            old, new = str(args[0]), str(args[1])
            hits = n + 1 if not old else obj.count(old)
            count = _int_arg(args, kwargs, 2, "count", -1)
            if count >= 0:
                hits = min(hits, count)
            return n + hits * max(len(new) - len(old), 0)
        if name == "join" and args:
            items = take(args[0], b, "`join`")
            return sum(size_of(i, b.cap + 1) for i in items) + n * len(items)
        if name in ("split", "rsplit", "splitlines"):
            return n * 4 + 2  # at worst every character a part: `"x",`
        if name in ("upper", "lower", "casefold", "swapcase", "title", "capitalize"):
            return n * 3  # 'ß'.upper() == 'SS', 'ﬃ'.upper() == 'FFI'
        if name == "encode":
            return n * 4
        if name == "translate" and args and isinstance(args[0], Mapping):
            widest = max((size_of(v, b.cap + 1) for v in args[0].values()), default=1)
            return n * max(widest, 1)
        return None
    if isinstance(obj, (bytes, bytearray)) and name in ("decode", "hex"):
        return len(obj) * 4
    if isinstance(obj, int) and name == "to_bytes":
        return _int_arg(args, kwargs, 0, "length", 1)
    if isinstance(obj, dict) and name == "fromkeys":
        return 0  # built from its inputs; measured after the call (shared values)
    return None


def check_method(obj: Any, name: str, args: tuple, kwargs: dict, b: Budget) -> bool:
    """Pre-check a builtin method call; True if its result must be measured afterwards."""
    size = _method_size(obj, name, args, kwargs, b)
    if size is None:
        return False
    b.charge(size, f"`{name}()`")
    return True


def check_result(result: Any, b: Budget, what: str) -> None:
    if isinstance(result, (str, bytes, list, tuple, dict)):
        b.allow(size_of(result, b.cap + 1), what)
