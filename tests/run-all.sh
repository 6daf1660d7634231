#!/bin/sh
# run-all.sh BUILD: every test suite, in order of cost.  Each suite prints
# its own summary; this prints the last line, "TOTAL: ...", and fails if
# any suite failed.  Suites clean up after themselves; so does a Ctrl-C.
set -u
BUILD=${1:-build}
PY=/usr/bin/python3
failed=
run() {
	name=$1
	shift
	echo "=== $name"
	if "$@"; then
		echo "=== $name: passed"
	else
		echo "=== $name: FAILED"
		failed="$failed $name"
	fi
}
run unit tests/run-unit.sh "$BUILD"/tests/test_*
run fuzz tests/fuzz/run.sh "$BUILD" 10 fcgi chan agent config route
run agent "$PY" tests/agent_test.py "$BUILD"
run e2e "$PY" tests/e2e/run.py "$BUILD"
if [ -n "$failed" ]; then
	echo "TOTAL: FAILED:$failed"
	exit 1
fi
echo "TOTAL: all suites passed"
