#!/bin/sh
# Print, sleep, print: the first line must arrive before the second exists.
echo "first line"
sleep 2
echo "second line"
