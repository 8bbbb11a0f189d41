"""Evaluation gates above the runtimes and the metrics: does a graph or engine reproduce the reference model?"""
