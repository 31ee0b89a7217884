"""syncsgd's shared core: the numpy backprop engine, the job contracts, datasets.

Imports only numpy, pydantic and the standard library (scikit-learn lazily, for
its bundled digits data), so workers and the service can both depend on it.
"""
