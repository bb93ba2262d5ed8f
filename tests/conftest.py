"""Test-session set-up shared by every test module."""

import os

# Set before torch is imported by any test module: OpenMP's default
# spin-waiting makes many small torch ops crawl on a loaded 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
