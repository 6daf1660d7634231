#!/usr/bin/python3
# 3 MiB of every byte value, in pieces: more than any pipe or buffer holds.
import sys

piece = bytes(range(256)) * 256
out = sys.stdout.buffer
for _ in range(48):
    out.write(piece)
out.flush()
