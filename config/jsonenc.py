"""The API's JSON encoder (config/api.py's renderer, runs/api/run_list.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ninja.responses import NinjaJSONEncoder


class Encoder(NinjaJSONEncoder):
    """Timestamps keep their microseconds (Django's encoder cuts them to milliseconds), so a
    `created_at` read from the API is exact when passed back as `created_after`."""

    def default(self, o: Any) -> Any:
        if isinstance(o, dt.datetime):
            value = o.isoformat()
            return value[:-6] + "Z" if value.endswith("+00:00") else value
        return super().default(o)
