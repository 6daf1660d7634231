#!/bin/sh
# A 3 s handler: its tenant may run one at a time (max_concurrent = 1).
sleep 3
echo "done"
