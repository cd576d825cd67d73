"""Fails on purpose: prints progress, then exits non-zero (to exercise the FAILED path)."""

import sys

print("starting a job that is meant to fail", flush=True)
print("step 1 of 2 done", flush=True)
print("error: simulated failure in step 2", file=sys.stderr, flush=True)
sys.exit(3)
