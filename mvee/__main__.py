"""The `mvee` command and `python -m mvee`.

Loading the monitor's modules takes a fifth of a second: the forwarded signals are
blocked first, so a ^C in that time waits for the monitor and is forwarded like any
later one, instead of ending Python with a KeyboardInterrupt traceback.
"""

import signal
import sys

from mvee.forwarded import FORWARDED


def run() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    from mvee.cli import main  # only now: its imports take the time

    return main()


if __name__ == "__main__":
    sys.exit(run())
