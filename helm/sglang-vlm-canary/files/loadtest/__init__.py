"""Open-loop VLM load generation for Locust (`locust -f loadtest/vlm.py`); see docs/loadtest.md."""
