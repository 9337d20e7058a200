"""Ctrl-C and SIGTERM during a run: one signal, one checkpoint, one clean exit.

A signal often arrives twice: a terminal's Ctrl-C, a job runner, `kill -- -PGID` or a cluster's
preemption signal the whole process group, so `uv run` forwards to Python the signal Python
has already received. Treating the second copy as "quit now" would lose the checkpoint. So:
- before training starts (data preparation, model building), a signal stops the run at once
  (`Interrupted`), since there is nothing to save yet;
- during training, the first signal only asks the loop to stop after the current step and
  save; copies that follow are ignored;
- a signal that comes after the save has begun and at least `GRACE_S` after the first one
  forces a quit (`Interrupted`): the user means it. Checkpoints are written atomically, so even
  that loses no data.
The exit status is the shell's convention, 128 + the signal number (130 SIGINT, 143 SIGTERM).
"""

import signal
import threading
import time

GRACE_S = 2.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run was stopped by a signal; `exit_code` is 128 + its number."""

    def __init__(self, signum: int, message: str = ""):
        self.signum, self.exit_code = signum, 128 + signum
        super().__init__(message or f"{signal.Signals(signum).name} received")


class StopSignals:
    """Install the handlers for the duration of a `with` block (main thread only; elsewhere,
    e.g. in a test's worker thread, it does nothing and `requested` stays False).

    The trainer calls `defer()` when training starts and `saving()` when it begins the final
    checkpoint; it polls `requested` after each step.
    """

    def __init__(self):
        self.signum: int | None = None
        self._first_at = 0.0
        self._deferred = self._saving = False
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def defer(self) -> None:
        self._deferred = True

    def saving(self) -> None:
        self._saving = True

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if not self._deferred:
            raise Interrupted(signum)
        if self.signum is None:
            self.signum, self._first_at = signum, now
        elif self._saving and now - self._first_at >= GRACE_S:
            raise Interrupted(signum, "second signal during the save: quitting at once")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
