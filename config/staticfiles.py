"""Static files from the web process itself (ServeStatic), with or without `collectstatic`."""

from __future__ import annotations

from typing import Any

from servestatic.middleware import ServeStaticMiddleware


class StaticFilesMiddleware(ServeStaticMiddleware):
    """Serves STATIC_ROOT (`collectstatic`'s output), and the apps' own static folders for
    whatever was never collected: a web process started on a new machine, or from an image
    built without that step, still has a styled admin and API docs.

    ServeStatic indexes STATIC_ROOT before the finders, so a finder's file would replace a
    collected one; STATIC_ROOT is indexed once more last, so what an operator deployed wins.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.use_finders and self.static_root:
            self.add_files(self.static_root, prefix=self.static_prefix)
