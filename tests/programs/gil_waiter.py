"""A CPython main thread that naps and waits for the GIL (a timed futex wait) while
another thread computes; SIGUSR1, sent once "ready" is out, ends its loop.
Prints "ready", then "got it"."""
import signal
import threading
import time

got, stop = [], []
signal.signal(signal.SIGUSR1, lambda *a: got.append(1))


def spin() -> None:
    while not stop:
        pass


thread = threading.Thread(target=spin)
thread.start()
print("ready", flush=True)
while not got:
    time.sleep(0.001)
stop.append(1)
thread.join()
print("got it")
