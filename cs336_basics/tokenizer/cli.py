"""What the tokenizer scripts share: an error or an interrupt ends them with one line, never a
traceback."""

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM arrived; `args[0]` is the signal number. A BaseException, so
    that `except Exception` clean-up code does not swallow it."""


def _interrupt(signum: int, frame) -> None:
    for s in STOP_SIGNALS:  # a second signal must not cut the clean-up of the first short
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def one_line_errors(outputs_on_interrupt: str) -> Iterator[None]:
    """Run a script's work. SIGINT and SIGTERM end it with `interrupted (SIGINT): <outputs>` on
    stderr and exit status 128 + the signal (130, 143); an OSError or ValueError with
    `error: <message>` and status 1. `outputs_on_interrupt` says what became of the outputs.
    Worker processes (`map_ranges`) die silently on the same signals."""
    for s in STOP_SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:  # ignored on purpose (nohup): stay so
            signal.signal(s, _interrupt)
    try:
        yield
    except Interrupted as e:
        signum = e.args[0]
        print(
            f"interrupted ({signal.Signals(signum).name}): {outputs_on_interrupt}", file=sys.stderr
        )
        sys.exit(128 + signum)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
