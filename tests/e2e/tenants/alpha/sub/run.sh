#!/bin/sh
# Its directory is replaced by a symlink out of the tenant before the test.
echo "sub/run.sh ran"
