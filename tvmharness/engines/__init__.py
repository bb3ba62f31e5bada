from .base import ENGINE_NAMES, Engine, EngineOptions, Session, get_engine

__all__ = ["ENGINE_NAMES", "Engine", "EngineOptions", "Session", "get_engine"]
