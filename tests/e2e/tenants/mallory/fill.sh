#!/bin/sh
# Fills /tmp (a tmpfs) until the file size limit or the disk stops it,
# says how far it got, and fails (502).
dd if=/dev/zero of=/tmp/fill bs=1M
ls -l /tmp/fill >&2
exit 3
