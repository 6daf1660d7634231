#!/bin/sh
# Replaced or removed by the e2e test before it is requested.
echo "unread.sh ran"
