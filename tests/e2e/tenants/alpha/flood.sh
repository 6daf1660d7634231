#!/bin/sh
# 50 MB to stdout, as fast as the client takes it; the client never reads.
head -c 52428800 /dev/zero
