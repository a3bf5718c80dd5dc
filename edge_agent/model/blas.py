"""numpy's BLAS on the calling thread in a running agent.

OpenBLAS (numpy's BLAS) splits a matrix product over a pool of threads whose workers busy-wait after
each product for the next one. The agent's products are small and come once a second per machine
(a window's k-NN against its bank), so the pool mostly spins: measured on a 2-core machine, the
k-NN of one window against a bank of 1,000 entries cost 96 ms of process CPU for 1.4 ms of work
(0.9 ms on one thread), 106 ms against 20,000 entries (9.5 ms on one thread). ``run`` keeps BLAS on
the calling thread; ONNX Runtime has its own pool, and OpenMP (k-means in a learning period) is
left alone.
"""

from __future__ import annotations

import logging

log = logging.getLogger("edge_agent.model.blas")


def single_thread_blas() -> int:
    """Limit every loaded BLAS library to one thread for the life of the process; returns the
    threads BLAS had (0: none loaded that can be controlled)."""
    import numpy  # noqa: F401 - loads numpy's BLAS, which is what gets limited
    from threadpoolctl import threadpool_limits

    had = threadpool_limits(limits=1, user_api="blas").get_original_num_threads().get("blas") or 0
    if had:
        log.info("numpy's BLAS runs on the calling thread (it had %d)", had)
    return had
