"""Benchmarks (not tests). Run them from the repository root as modules, e.g.
`python -m bench.run --quick`; see each module's docstring for its options."""
