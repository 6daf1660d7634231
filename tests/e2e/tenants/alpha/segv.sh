#!/bin/sh
# Die of a signal before any output: 502.
kill -SEGV $$
