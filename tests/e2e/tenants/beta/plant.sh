#!/bin/sh
# Tenant beta: leaves its payload in the places a handler can write.
# marker: E2E-BETA-SCRIPT-7c0ffee5d41402ab
body=$(cat)
for d in /tmp /var/tmp /dev/shm "${HOME:-/tmp}" .; do
	printf '%s\n' "$body" >"$d/beta-payload" 2>/dev/null
done
echo "planted"
