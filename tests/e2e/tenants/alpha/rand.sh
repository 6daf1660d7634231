#!/bin/sh
# Fresh randomness and the guest's idea of the time.
echo "random $(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
echo "time $(date +%s)"
