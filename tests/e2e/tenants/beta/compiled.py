#!/usr/bin/python3
# Rewritten by test_python_code_kept_between_events.
print("compiled")
