"""aitk engine: everything but the user interface. Never imports textual; heavy libraries lazily."""

__version__ = "0.1.0"
