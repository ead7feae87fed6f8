"""Warren's benchmark harness: Warren's figures beside raw-client baselines, in the same run.

Run with ``uv run python -m bench [--quick]`` (``make bench``). See ``bench/README.md``.
"""
