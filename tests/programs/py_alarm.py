"""A CPython program whose SIGALRM handler writes while the main code computes and prints.

CPython's C-level handler only sets a flag; the Python handler runs at the eval loop's
next check, wherever that is: the idiom every Python signal handler follows. Output
(stdout) does not depend on where the ticks land; the handler writes to /dev/null.
usage: py_alarm.py [STEPS]
"""

import os
import signal
import sys

ticks = 0
devnull = os.open("/dev/null", os.O_WRONLY)


def on_alarm(signum: int, frame: object) -> None:
    global ticks
    ticks += 1
    os.write(devnull, b"tick\n")


signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
total = 0
for i in range(1, steps + 1):
    total = (total * 31 + i) % 1000003
    if i % (steps // 10) == 0:
        print("step", i, total, flush=True)
signal.setitimer(signal.ITIMER_REAL, 0, 0)
print("done", total, "ticked" if ticks else "no tick")
