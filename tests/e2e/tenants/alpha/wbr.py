#!/usr/bin/python3
# Write 1 MiB before reading stdin, then report the body's digest: a host
# that sends the whole body before reading output would deadlock here.
import hashlib
import sys

out = sys.stdout.buffer
out.write(b"w" * (1 << 20))
out.flush()
body = sys.stdin.buffer.read()
out.write(("\n%d %s\n" % (len(body), hashlib.sha256(body).hexdigest()))
          .encode())
