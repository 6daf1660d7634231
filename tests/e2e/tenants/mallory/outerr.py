#!/usr/bin/python3
# 50 MB on stdout and 50 MB on stderr, interleaved: the body arrives
# whole, stderr is cut to stderr_limit in the log.
import os

chunk = b"o" * (1 << 20)
junk = b"e" * (1 << 20)
for _ in range(50):
    os.write(1, chunk)
    os.write(2, junk)
