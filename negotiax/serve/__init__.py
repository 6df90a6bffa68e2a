"""`negotiax serve`: an OpenAI-compatible server where each request sets its own preference β."""
from .config import ServeConfig
from .engine import Engine, Job

__all__ = ["Engine", "Job", "ServeConfig"]
