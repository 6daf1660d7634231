#!/bin/sh
# A CGI header block the host must honour.
cat >/dev/null
printf 'Status: 201 Created\n'
printf 'Content-Type: application/x-e2e\n'
printf 'X-Foo: bar\n'
printf '\n'
printf 'created\n'
