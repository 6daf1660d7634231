#!/bin/sh
# The normal event that must still succeed after each abuse.
cat
