"""The runs list's filters as a URL: parsed from the query string, turned back into one.

Every filter lives in the GET query (`status`, `graph`, `q`, `from`, `to`), so a filtered view
can be bookmarked, shared, reloaded and walked back with the browser's back button; pagination
links and the live rows URL carry the same query, so the next page and the rows a websocket
event refetches match the filters too. A value that does not parse is dropped (and named on
the page), never an error.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.http import QueryDict

from runs import selectors
from runs.status import ACTIVE, TERMINAL, RunStatus

MAX_GRAPH_CHARS = 200
# "active" and "ended" stand for every status that can still change, and every final one.
STATUS_GROUPS: dict[str, frozenset[str]] = {"active": ACTIVE, "ended": TERMINAL}
STATUS_CHOICES = [*STATUS_GROUPS, *RunStatus.values]


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        return None


@dataclass
class ListQuery:
    status: str = ""
    graph: str = ""
    search: str = ""
    created_from: dt.date | None = None
    created_to: dt.date | None = None
    ignored: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params: QueryDict) -> ListQuery:
        query = cls()
        status = params.get("status", "").strip()
        if status in STATUS_CHOICES:
            query.status = status
        elif status:
            query.ignored.append("status")
        graph = params.get("graph", "").strip()
        if len(graph) <= MAX_GRAPH_CHARS:
            query.graph = graph
        else:
            query.ignored.append("graph")
        query.search = params.get("q", "").strip()[: selectors.SEARCH_MAX_CHARS]
        for name, attr in (("from", "created_from"), ("to", "created_to")):
            text = params.get(name, "").strip()
            if not text:
                continue
            day = _date(text)
            if day is None or not dt.date(1970, 1, 1) <= day <= dt.date(9998, 12, 31):
                query.ignored.append(name)
            else:
                setattr(query, attr, day)
        return query

    @property
    def active(self) -> bool:
        return bool(self.params())

    def filters(self) -> selectors.RunFilters:
        statuses = sorted(STATUS_GROUPS.get(self.status, {self.status} if self.status else ()))
        midnight = dt.time(0, tzinfo=dt.UTC)
        return selectors.RunFilters(
            statuses=statuses,
            graph=self.graph or None,
            search=self.search,
            # Days are UTC days, both ends included: `to` means "before the next midnight".
            created_after=(
                dt.datetime.combine(self.created_from, midnight) - dt.timedelta(microseconds=1)
                if self.created_from
                else None
            ),
            created_before=(
                dt.datetime.combine(self.created_to + dt.timedelta(days=1), midnight)
                if self.created_to
                else None
            ),
        )

    def params(self) -> list[tuple[str, str]]:
        pairs = [
            ("status", self.status),
            ("graph", self.graph),
            ("q", self.search),
            ("from", self.created_from.isoformat() if self.created_from else ""),
            ("to", self.created_to.isoformat() if self.created_to else ""),
        ]
        return [(k, v) for k, v in pairs if v]

    def url(self, **first: str) -> str:
        """`?` and the query: the given pairs first (a cursor), then the filters."""
        pairs = [(k, v) for k, v in first.items() if v] + self.params()
        return "?" + urlencode(pairs) if pairs else "?"
