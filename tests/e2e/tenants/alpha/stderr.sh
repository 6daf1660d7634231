#!/bin/sh
# About 100 KB of stderr around a little stdout: stderr must go to the log
# (cut at stderr_limit), never into the response or in the way of stdout.
line=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
echo "E2E-STDERR-START" >&2
echo "out 1"
i=0
while [ $i -lt 1000 ]; do
	echo "$line" >&2
	i=$((i + 1))
done
echo "E2E-STDERR-END" >&2
echo "out 2"
