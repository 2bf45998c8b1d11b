"""The signals sent to the monitor that it forwards to the variants.

A module of its own, without imports of the monitor, so that the entry point can
block them before the monitor's modules load.
"""

import signal

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM, signal.SIGWINCH, signal.SIGCONT)
