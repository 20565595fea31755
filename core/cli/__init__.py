"""The `queuebench` command (core/cli/main.py) and the tools it starts: the demo, the
containers' health probe, and the process helpers the demo, bench and tests share."""
