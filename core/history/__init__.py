"""Finished tasks in the database, after Redis lets their records go: the table read
and merged with Redis's records (store.py), and the writer that fills it from the
`qb:history` stream (writer.py)."""
