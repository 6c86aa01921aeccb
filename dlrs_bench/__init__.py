"""dlrs-bench: a declarative benchmark suite for deep-learning recommendation systems."""

__version__ = "0.1.0"
