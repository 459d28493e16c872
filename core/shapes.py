"""Shape models: randomly initialised models with a catalog model's real shape, built offline.

A shape model has the real architecture, hidden size, layers, heads, KV heads, intermediate size,
vocabulary and context of a catalog entry (the catalog's own facts), random weights, and the tiny
model's tokenizer (`tiny.build_tokenizer`). Benchmarks and rehearsals use it to measure memory and
speed at real scale without downloading gigabytes or accepting a licence.

Token ids: the embedding matrix has the real vocabulary size (so memory and FLOPs are the real
model's), while the tiny tokenizer only produces ids below its own size (2048); the ids above are
valid rows no text maps to. bos = pad = `<|endoftext|>`, eos = `<|end|>` (the tiny ids, 0 and 4),
written into config.json and generation_config.json; the chat template is the tiny (Phi-3) one.

Weights are generated tensor by tensor straight into safetensors shards in the catalog's
`weights_dtype`: the model is never materialised (its skeleton lives on torch's meta device), so
memory stays at about one shard and a 3.8B model builds within a few GB. Each block of a tensor draws
from its own generator seeded by (seed, tensor name, block): the same inputs give the same bytes, and a model cut
to N layers (`layers=N`) has exactly the first N layers of the full one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import paths, tiny
from .catalog import CatalogEntry
from .errors import AitkError

MARKER = "aitk-shape.json"
BUILDER_VERSION = 1               # bump when the bytes a spec gives change
SHARD_BYTES = 1 << 30             # ~1 GiB per safetensors shard: peak memory while writing
INITIALIZER_RANGE = 0.02          # transformers' default std for these architectures


@dataclass(frozen=True)
class ShapeSpec:
    """What a shape model is built from: a catalog entry's facts, a depth and a seed."""

    entry: CatalogEntry
    layers: int
    seed: int = 0

    @property
    def name(self) -> str:
        cut = f"-{self.layers}l" if self.layers != self.entry.num_layers else ""
        seed = f"-s{self.seed}" if self.seed else ""
        return f"{self.entry.id}{cut}{seed}"

    def facts(self) -> dict:
        e = self.entry
        return {"id": e.id, "architecture": e.architecture, "hidden_size": e.hidden_size,
                "num_layers": self.layers, "catalog_layers": e.num_layers, "num_heads": e.num_heads,
                "num_kv_heads": e.num_kv_heads, "intermediate_size": e.intermediate_size,
                "vocab_size": e.vocab_size, "context_length": e.context_length,
                "tie_embeddings": e.tie_embeddings, "weights_dtype": e.weights_dtype, "seed": self.seed}

    def digest(self) -> str:
        payload = {"facts": self.facts(), "tokenizer": tiny.DEMO.digest(), "version": BUILDER_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def spec_for(entry: CatalogEntry, layers: int | None = None, seed: int = 0) -> ShapeSpec:
    if entry.local:
        raise AitkError(f"{entry.id} is built on this machine already; it has no separate shape model",
                        "use `aitk model build-tiny`, or a hub model's id (e.g. qwen2.5-0.5b)")
    if layers is not None and not 1 <= layers <= entry.num_layers:
        raise AitkError(f"--layers {layers}: {entry.id} has {entry.num_layers} layers",
                        f"give a depth from 1 to {entry.num_layers}")
    if seed < 0:
        raise AitkError(f"--seed {seed}: must be 0 or more")
    return ShapeSpec(entry, layers or entry.num_layers, seed)


def model_dir(spec: ShapeSpec) -> Path:
    return paths.models_dir() / "shapes" / spec.name


def is_built(spec: ShapeSpec, dest: Path | None = None) -> bool:
    try:
        return json.loads(((dest or model_dir(spec)) / MARKER).read_text())["digest"] == spec.digest()
    except (OSError, ValueError, KeyError):
        return False


def model_type(architecture: str) -> str:
    """transformers' model_type for an architecture class (Phi3ForCausalLM -> phi3)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    for mtype, cls in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items():
        if cls == architecture:
            return mtype
    raise AitkError(f"this transformers has no causal LM class {architecture!r}",
                    "fix the catalog entry's `architecture`, or update transformers")


def hf_config(spec: ShapeSpec, ids: dict[str, int]):
    """The transformers config of the shape: the catalog's facts over the architecture's defaults."""
    from transformers import AutoConfig

    e = spec.entry
    config = AutoConfig.for_model(
        model_type(e.architecture),
        architectures=[e.architecture],
        vocab_size=e.vocab_size,
        hidden_size=e.hidden_size,
        intermediate_size=e.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=e.num_heads,
        num_key_value_heads=e.num_kv_heads,
        head_dim=e.head_dim,
        max_position_embeddings=e.context_length,
        tie_word_embeddings=e.tie_embeddings,
        initializer_range=INITIALIZER_RANGE,
        # The defaults are the real models' ids (32000, 151643, ...); the tiny tokenizer's are small.
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|end|>"],
        pad_token_id=ids["<|endoftext|>"],
        dtype=e.weights_dtype,
    )
    if getattr(config, "sliding_window", None) is not None:
        # Mistral's config defaults to a 4096 window; the catalog's models attend over their
        # whole context (Mistral v0.3, Qwen2.5 with use_sliding_window false).
        config.sliding_window = None
    return config


BLOCK = 1 << 24  # elements drawn by one generator: big matrices fill in parallel, same bytes on any core count


def _block_seed(seed: int, name: str, block: int) -> int:
    digest = hashlib.sha256(f"{seed}:{name}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _init(name: str, shape: tuple[int, ...], dtype, seed: int, pool):
    """One tensor as transformers' `_init_weights` makes it: norms 1, biases 0, weights N(0, 0.02).

    A matrix is drawn in row blocks of ~BLOCK elements, each from its own generator seeded by
    (seed, name, block), on the pool's threads (torch releases the GIL while it fills).
    """
    import torch

    if len(shape) == 1:
        leaf = name.rsplit(".", 1)[-1]
        return (torch.zeros if leaf == "bias" else torch.ones)(shape, dtype=dtype)
    out = torch.empty(shape, dtype=dtype)
    rows = out.view(shape[0], -1)
    step = max(1, BLOCK // rows.shape[1])

    def fill(block: int) -> None:
        g = torch.Generator().manual_seed(_block_seed(seed, name, block))
        rows[block * step:(block + 1) * step].normal_(0.0, INITIALIZER_RANGE, generator=g)

    list(pool.map(fill, range((shape[0] + step - 1) // step)))
    return out


def _tensors(config):
    """(name, shape) of every tensor a checkpoint stores, from a skeleton on the meta device.

    named_parameters() drops duplicates, so a tied lm_head is left out as save_pretrained does.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    persistent = set(skeleton.state_dict())
    out = [(n, tuple(p.shape)) for n, p in skeleton.named_parameters()]
    out += [(n, tuple(b.shape)) for n, b in skeleton.named_buffers() if n in persistent]
    return out


def param_count(spec: ShapeSpec) -> int:
    """Parameters of the shape (tied embeddings counted once), without building it."""
    from math import prod

    config = hf_config(spec, {"<|endoftext|>": 0, "<|end|>": 0})
    return sum(prod(shape) for _, shape in _tensors(config))


def _write_weights(config, dest: Path, dtype_name: str, seed: int) -> int:
    """Generate and save the weights shard by shard; return the parameter count."""
    from math import prod

    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    nbytes = torch.empty((), dtype=dtype).element_size()
    tensors = _tensors(config)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        n = prod(shape) * nbytes
        if shards[-1] and size + n > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += n
    files = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for file, shard in zip(files, shards):
            save_file({name: _init(name, shape, dtype, seed, pool) for name, shape in shard}, dest / file,
                      metadata={"format": "pt"})
            weight_map.update({name: file for name, _ in shard})
    params = sum(prod(shape) for _, shape in tensors)
    if len(files) > 1:
        index = {"metadata": {"total_size": params * nbytes}, "weight_map": dict(sorted(weight_map.items()))}
        (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return params


def _write(spec: ShapeSpec, dest: Path) -> None:
    from transformers import GenerationConfig

    tokenizer, ids = tiny.build_tokenizer(tiny.DEMO, context_length=spec.entry.context_length)
    tokenizer.save_pretrained(dest)
    config = hf_config(spec, ids)
    config.save_pretrained(dest)
    GenerationConfig(bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|end|>"], ids["<|endoftext|>"]],
                     pad_token_id=ids["<|endoftext|>"]).save_pretrained(dest)
    params = _write_weights(config, dest, spec.entry.weights_dtype, spec.seed)
    marker = {"digest": spec.digest(), "facts": spec.facts(), "params": params,
              "tokenizer_vocab": len(tokenizer),
              "token_ids": {"bos": ids["<|endoftext|>"], "eos": ids["<|end|>"], "pad": ids["<|endoftext|>"]}}
    (dest / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def build_shape(spec: ShapeSpec, dest: Path | None = None, *, rebuild: bool = False) -> Path:
    """The shape model's folder, built first when missing or stale.

    Built into a temporary sibling and renamed into place: a crash never leaves half a model.
    """
    dest = dest or model_dir(spec)
    if not rebuild and is_built(spec, dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _write(spec, tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def info(path: Path) -> dict:
    """The marker of a built shape model (facts, params, token ids)."""
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError) as e:
        raise AitkError(f"{path} is not a shape model (no readable {MARKER})",
                        "build one with `aitk model build-shape ID`") from e
