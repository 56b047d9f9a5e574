"""Run a short blocking call (a source test, a broker test, a folder scan) off the GUI thread and get
its outcome back on the GUI thread through a signal."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PyQt5.QtCore import QObject, pyqtSignal

log = logging.getLogger(__name__)


class _Call(QObject):
    finished = pyqtSignal(object)


class Background(QObject):
    """``run(fn, on_done)``: ``fn()`` on a daemon thread; ``on_done(result)`` on the GUI thread.
    An exception from ``fn`` is passed to ``on_done`` as the result."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: set[_Call] = set()

    def run(self, fn: Callable[[], Any], on_done: Callable[[Any], None], name: str = "background") -> None:
        call = _Call()
        self._pending.add(call)

        def done(result: Any) -> None:
            self._pending.discard(call)
            on_done(result)

        call.finished.connect(done)

        def work() -> None:
            try:
                result = fn()
            except Exception as exc:  # handed to the GUI to show
                log.warning("%s failed: %s", name, exc)
                result = exc
            call.finished.emit(result)

        threading.Thread(target=work, name=name, daemon=True).start()

    @property
    def busy(self) -> bool:
        return bool(self._pending)
