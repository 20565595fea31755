"""Periodic tasks: the schedule's entries, parsed and checked from TOML (entries.py;
core's own is default.toml), and core's scheduler, which fires each tick once however
many run (scheduler.py). A library's own scheduler is the adapter's
`run_native_scheduler`."""
