"""What the tests and the benchmark scripts share, and the service never imports: random-weight
checkpoints in each backend's official file layout, the upstream reference networks (test-only
packages), portrait variants, and the launcher that runs the real service on a free port. Not part of the installed package (pyproject ships runtime only)."""
