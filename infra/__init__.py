"""Local process infrastructure shared by the embedded stack and the tests (ports, readiness, Prometheus)."""
