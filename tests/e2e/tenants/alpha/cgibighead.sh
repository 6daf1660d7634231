#!/bin/sh
# A header block of about 1.6 KB: well within the 8 KB allowed.
printf 'Status: 201\n'
i=0
while [ $i -lt 30 ]; do
	printf 'X-Header-%02d: %s\n' $i 0123456789012345678901234567890123456789abcd
	i=$((i + 1))
done
printf '\nbody\n'
