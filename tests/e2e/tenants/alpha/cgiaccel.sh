#!/bin/sh
# Headers a handler must not send: the web server would act on them inside
# its own trust domain.  QUERY_STRING picks which.
case $QUERY_STRING in
redirect) printf 'X-Accel-Redirect: /e2e-hooks/beta/echo\n\n' ;;
sendfile) printf 'X-Sendfile: /etc/passwd\n\n' ;;
local) printf 'Status: 200\nLocation: /e2e-hooks/beta/echo\n\n' ;;
esac
