"""What every command shares: the :class:`Context` it runs in and how Ctrl-C / SIGTERM stop it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import click

from tiering.app import App
from tiering.config import Config, load_config
from tiering.transfer.copier import GIVE_UP_GRACE_SECONDS

#: set by the first Ctrl-C / SIGTERM of a command: the process then exits without joining abandoned copies
STOP_REQUESTED = threading.Event()


class Context:
    """What one command runs in: the ``--config`` path, and the :class:`App` opened on first use and closed
    when the command ends (commands that need no catalog, like ``policy check``, never open it)."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._app: App | None = None

    def config(self) -> Config:
        return load_config(self.config_path)

    def app(self, *, accept_changes: tuple[str, ...] = ()) -> App:
        if self._app is None:
            self._app = App.open(self.config(), accept_changes=accept_changes)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


#: hands a command the group's :class:`Context` as its first argument
pass_ctx = click.make_pass_decorator(Context)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: stop starting new copies, give those under way a short grace, and leave the job
    resumable. Second: abort."""
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        STOP_REQUESTED.set()
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo(f"\nstopping: copies under way get {GIVE_UP_GRACE_SECONDS:g} s to finish, the rest is left "
                   f"for `tiering resume`", err=True)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
