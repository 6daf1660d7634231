#!/bin/sh
# Malformed CGI header blocks, chosen by the query string: all are 502.
cat >/dev/null
case $QUERY_STRING in
nocolon) printf 'this line is no header\n\nbody\n' ;;
noend) printf 'Status: 200 OK\nContent-Type: text/plain\n' ;;
badstatus) printf 'Status: twohundred\n\nbody\n' ;;
*) printf 'unknown variant\n' ;;
esac
