"""Benchmarks anyone can run: `vist2 bench render` and `vist2 bench efficiency`.

Every figure comes from a command; ratios are measured side by side in one run.
"""
