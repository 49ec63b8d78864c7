"""Benchmarks: each prints its figures and ratios against a baseline measured in the same run.

This package may import any layer (it drives them together); the layers never import it.
``lambdactl bench ...`` is a thin entry point into these modules.
"""
