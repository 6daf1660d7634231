#!/bin/sh
# Succeed without a byte of output: 204.
cat >/dev/null
exit 0
