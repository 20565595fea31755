"""queuebench's core: one task API in front of any of several queue libraries.

By role, each layer importing only those below it (checked by `./run lint`):
- cli/: the `queuebench` command; api/: the HTTP API, with the dashboard and /metrics;
- worker/: what runs beside a library's worker (runner, lane, interrupt, heartbeat,
  reaper); schedule/: periodic entries and core's scheduler;
- backend.py: `TaskBackend`, the adapter contract and what every backend shares;
- history/: finished tasks in the database; brokers/: how a submit reaches its broker;
- tasks/: the shared tasks and what describes a task;
- store/: everything queuebench keeps in Redis; db/: the relational database;
- settings.py, errors.py, states.py: the leaves.
docs/architecture.md walks one submit and one worker run through them.
"""
