#!/bin/sh
# Spin until the hard timeout: 504.  A child spins too, to show that the
# whole VM goes, not just the handler process.
(while :; do :; done) &
while :; do :; done
