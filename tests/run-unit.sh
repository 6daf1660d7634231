#!/bin/sh
# Run each unit test binary given as an argument; they print TAP.
# Prints "unit: N passed, M failed" and fails if any test failed.
pass=0
fail=0
for t in "$@"; do
	echo "# $t"
	if "$t"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "not ok - $t failed"
	fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
