"""aitk-tui: fine-tune and chat with small language models from a terminal.

The code lives in the folders at the repository root (core/, providers/, tui/, cli/, themes/),
installed under this one namespace.
"""

__version__ = "0.1.0"
