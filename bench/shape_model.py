"""A catalog model's shape model exported int4 for CPU, built once and kept for the benches.

The shape model (core/shapes.py: real architecture and vocabulary, random weights, the tiny
tokenizer) is built into the data folder's models/shapes and exported with aitk's own export
code (int4, this machine's thread count) into models/shapes-onnx, named by the shape's digest and
the export code's: a later bench run reuses both (the export of the 0.5B shape takes ~40 s and
~5.5 GB), and a change to the export (block size, say) exports again.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from aitk.core import catalog, export, paths, shapes


def int4_export(model_id: str, layers: int | None = None) -> Path:
    spec = shapes.spec_for(catalog.get(model_id), layers)
    code = hashlib.sha256(Path(export.__file__).read_bytes()).hexdigest()[:8]
    dest = paths.models_dir() / "shapes-onnx" / f"{spec.name}-{spec.digest()}-{code}-int4"
    if not (dest / "genai_config.json").is_file():
        print(f"[bench] building the {spec.name} shape model and its int4 export (once)", file=sys.stderr)
        export.export_model(str(shapes.build_shape(spec)), None, dest, precision="int4")
    return dest
