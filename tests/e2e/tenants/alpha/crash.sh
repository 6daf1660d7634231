#!/bin/sh
# Fail before any output: 502.
echo "crash.sh: failing on purpose" >&2
exit 3
