#!/bin/sh
# A fork bomb, then a spin that needs no fork: the guest's pids limit
# stops the bomb, the timeout ends the event (504).
bomb() { bomb | bomb & }
bomb 2>/dev/null
while :; do :; done
