"""Test configuration: one CPU device per test process (multi-device tests start their own)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
