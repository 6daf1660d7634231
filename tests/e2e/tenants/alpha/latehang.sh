#!/bin/sh
# Time out after output went out: the response must be cut short.
echo "partial output"
while :; do :; done
