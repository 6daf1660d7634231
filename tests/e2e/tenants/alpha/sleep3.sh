#!/bin/sh
# A 3 s handler, in flight while vmcgi gets SIGTERM.
sleep 3
echo "done"
