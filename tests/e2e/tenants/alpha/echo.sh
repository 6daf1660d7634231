#!/bin/sh
# Copy the request body to the response, byte for byte.
exec cat
