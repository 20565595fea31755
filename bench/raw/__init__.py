"""Raw mode: each library alone, with its own client, worker and result store, and
no queuebench code, configured as queuebench configures it (delivery after the run,
prefetch, polling) so that raw against direct measures only queuebench's interface.

Every module here defines the three workloads as that library's tasks, returning
`[started, finished]` (time.time()) so the harness reads queue wait and end-to-end
latency from the library's own results. The work itself is `bench.workloads`.
The harness runs the library's own worker command (`WORKER` below each module's
docstring) and submits with the library's own client through `Client`.

Each also defines `peer_job(num)`, the job of the public comparison that bench/peers.py
reproduces: it prints its finish time and returns nothing, as there.
"""
