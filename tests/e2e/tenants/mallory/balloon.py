#!/usr/bin/python3
# Allocates (and touches) memory until something stops it: past the
# guest's limit for handlers the kernel kills it (502).
import sys

held = []
while True:
    held.append(b"x" * (8 << 20))
    print(len(held) * 8, "MB", file=sys.stderr)
