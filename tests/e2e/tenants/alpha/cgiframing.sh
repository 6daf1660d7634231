#!/bin/sh
# A handler that claims a complete response, then fails: with its
# Content-Length honoured, the client would see a clean 200.  Or a 204 that
# fails after its header.  QUERY_STRING picks which; "ok" variants succeed.
case $QUERY_STRING in
length) printf 'Content-Length: 3\n\nok\n'; sleep 1; exit 1 ;;
nocontent) printf 'Status: 204\n\n'; sleep 1; exit 1 ;;
nocontent-ok) printf 'Status: 204 No Content\nX-Done: yes\n\n' ;;
esac
