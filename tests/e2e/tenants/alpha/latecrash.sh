#!/bin/sh
# Fail after output went out: the response must be cut short.
echo "partial output"
sleep 1
echo "latecrash.sh: failing after output" >&2
exit 5
