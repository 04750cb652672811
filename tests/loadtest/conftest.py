import sys
from pathlib import Path

# Integration helpers import as `loadtest_harness` (a uniquely named module) under importlib mode.
sys.path.insert(0, str(Path(__file__).parent))
