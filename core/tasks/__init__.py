"""What runs: the shared task definitions and everything that describes a task.

- shared.py: the tasks every backend runs, registered in one `Registry` (registry.py);
- options.py and policy.py: the options a submission may carry, and the retry policy;
- context.py: what a running task can ask about itself (`current_task()`);
- features.py: which features a backend honours, natively or through core.

`get_task` and `all_tasks` read the shared tasks' registry; importing this package is
what registers them, explicitly, here.
"""

from core.tasks.registry import TaskSpec
from core.tasks.shared import TASKS


def get_task(name: str) -> TaskSpec:
    """The shared task `name`; UnknownTask (a 404) if there is none."""
    return TASKS[name]


def all_tasks() -> dict[str, TaskSpec]:
    return dict(TASKS)
