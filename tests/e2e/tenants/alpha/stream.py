#!/usr/bin/python3
# A line every quarter second, spinning the CPU in between (so its VM is the
# busy one), for longer than any client waits.
import time

for i in range(1, 400):
    print("line %d" % i, flush=True)
    until = time.monotonic() + 0.25
    while time.monotonic() < until:
        pass
