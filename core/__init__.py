"""aitk engine: everything but the user interface. Never imports textual; heavy libraries lazily."""

import os as _os

__version__ = "0.1.0"

# onnxruntime and onnxruntime-genai otherwise keep a telemetry database (and a device id) under
# ~/.cache/Microsoft/DeveloperTools, outside aitk's folders; Olive keeps its own beside them.
# Set here because every aitk process (app, CLI, job, server) imports this package before either
# library, and their child processes (the model builder) inherit it. A value the user set wins.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
