"""Fleet campaigns: one campaign run by worker processes on many machines,
coordinated through the store's PostgreSQL database (docs/distributed.md).

:mod:`queue` (the queue's names, locks and schema), :mod:`share` (one slice
of a share, and the shared corpus), :mod:`tasks` (the job kinds, and the
app that runs them), :mod:`worker` (``foliodiff worker``), :mod:`create`
(starting a campaign), :mod:`bench` (``foliodiff bench-fleet``).
"""
