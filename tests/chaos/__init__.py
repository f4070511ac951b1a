"""The chaos suite: real processes, real signals, real databases, and a checker.

See docs/reliability.md. The quick profile runs in `make test`; `make chaos` runs the full one.
"""
