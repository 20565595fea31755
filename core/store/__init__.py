"""Everything queuebench keeps in Redis, and the one owner of it: the key names
(keys.py), the Lua scripts that move a record (lua/*.lua) and their caller
(scripts.py), the record and its store (records.py), the state and cancel channels
(events.py), and the worker processes' records as others read them (workers.py)."""
