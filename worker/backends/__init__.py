"""All-reduce backends behind :class:`common.collective.AllReduce`: ``mpi`` and ``ray`` (gloo)."""
