"""Cron expressions and time zones: checked once when a schedule is written, then used to find
each next tick. croniter parses and iterates; zoneinfo (with the tzdata package where the
system has no zone database) gives the zones, so `0 9 * * *` in Europe/Paris stays 09:00 local
across daylight-saving changes."""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

from croniter import CroniterBadDateError, CroniterError, croniter

MAX_EXPRESSION_CHARS = 200
MAX_TIMEZONE_CHARS = 64
# Standard five fields (minute hour day month weekday) or one of the usual nicknames. Six and
# seven fields (seconds, years) are refused: a tick per second is a flood, not a schedule.
MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


class InvalidSchedule(ValueError):
    """What is wrong with an expression or a zone, in words for the person who wrote it.
    `code` is the API's error code: `invalid_schedule` or `invalid_timezone` (refusals no
    schema can state)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = "invalid_timezone" if field == "timezone" else "invalid_schedule"


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone called `name` (IANA, e.g. `Europe/Paris`, `UTC`); InvalidSchedule otherwise.
    Only names of the zone database are looked up, so no caller-chosen path is ever read."""
    if not isinstance(name, str) or not name or len(name) > MAX_TIMEZONE_CHARS:
        raise InvalidSchedule("timezone", "timezone must be an IANA zone name such as UTC.")
    if name not in _zone_names():
        raise InvalidSchedule(
            "timezone", f"Unknown timezone {name!r}: use an IANA name such as Europe/Paris."
        )
    return zoneinfo.ZoneInfo(name)


def check_expression(expression: str) -> str:
    """The expression, whitespace-normalised, if croniter accepts it as five fields or a
    nickname; InvalidSchedule naming `schedule` otherwise."""
    if not isinstance(expression, str) or len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidSchedule(
            "schedule",
            f"schedule must be a cron expression of at most {MAX_EXPRESSION_CHARS} characters.",
        )
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise InvalidSchedule(
                "schedule",
                f"Unknown schedule {text!r}: use five fields (minute hour day month weekday) "
                f"or one of {', '.join(sorted(MACROS))}.",
            )
        return text.lower()
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise InvalidSchedule(
            "schedule",
            f"schedule {text!r} has {len(fields)} field(s); a cron expression has five: "
            "minute hour day-of-month month day-of-week (e.g. `*/15 * * * *`).",
        )
    try:
        croniter(text, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except (CroniterError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidSchedule("schedule", f"schedule {text!r} is not valid: {exc}.") from None
    return text


def next_tick(expression: str, tz: str, after: dt.datetime) -> dt.datetime:
    """The first tick strictly after `after`, in UTC. InvalidSchedule (`schedule`) when the
    expression never matches (`0 0 30 2 *`)."""
    local = after.astimezone(zone(tz))
    try:
        nxt = croniter(expression, local).get_next(dt.datetime)
    except CroniterBadDateError:
        raise InvalidSchedule(
            "schedule", f"schedule {expression!r} never fires (no such date)."
        ) from None
    except (CroniterError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidSchedule("schedule", f"schedule {expression!r} is not valid: {exc}.") from None
    return nxt.astimezone(dt.UTC)
