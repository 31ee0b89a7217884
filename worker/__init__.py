"""The workers: the per-rank trainer, its Ray actor, the group that drives a job.

Imports :mod:`common`; imports ray, mpi4py and torch lazily, per backend.
"""
