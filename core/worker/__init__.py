"""What runs beside a library's own worker, the same for every library: the runner
around each shared task (runner.py: start, call, finish; the one writer of a worker's
records), the connection it writes on (lane.py), stopping a running task (interrupt.py),
this process's liveness (heartbeat.py), and sending again what a dead worker ran or
what waits nowhere (reaper.py)."""
