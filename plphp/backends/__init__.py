"""The transformers backend: attention function, cache, model adapters and the session."""

from plphp.backends.adapters import ModelAdapter
from plphp.backends.session import Session, apply

__all__ = ["ModelAdapter", "Session", "apply"]
