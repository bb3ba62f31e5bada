from .base import Engine, EngineOptions, Session, get_engine

__all__ = ["Engine", "EngineOptions", "Session", "get_engine"]
