"""The database layer: async engines and sessions, the tables, migrations."""

from core.db.engine import dispose_all, engine, ping, safe_url, session, sessions
from core.db.models import Base, Notification, TaskHistory, User

__all__ = ["Base", "Notification", "TaskHistory", "User", "dispose_all", "engine", "ping",
           "safe_url", "session", "sessions"]
