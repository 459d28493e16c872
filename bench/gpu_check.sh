#!/usr/bin/env bash
# One prepared check for a CUDA machine, run from the repo root of a copy of the working tree:
#
#   bench/gpu_check.sh [--dry-run] [--quick]
#
#   1. QLoRA on the tiny model: a real `aitk finetune` job on cuda (bf16, nf4), plus a rehearsal
#      of it (tokens/s, peak GPU memory next to the app's estimate).
#   2. Phi-3-mini-4k at its real shape (`aitk model build-shape`, random weights): `aitk rehearse`
#      of the CUDA defaults (QLoRA nf4, bf16, r 64, batch 1 x 4, 1024 tokens, checkpointing) and of
#      LoRA bf16: tokens/s and torch.cuda.max_memory_allocated next to the formula.
#   3. The CUDA int4 export of that shape model (`aitk export --base-only --precision int4
#      --device cuda`) and its decode speed with onnxruntime-genai (32-token prompt, 128 new
#      tokens, greedy, median of 3).
#
# Writes $OUT/gpu_check.json (or bench/gpu_check.json when $OUT is unset) with every figure and,
# for a step that failed or was skipped, why; the steps' logs go next to it. --quick cuts the
# Phi-3 shape to 8 layers (export and decode then measure 8 of 32 layers). --dry-run prints
# the steps and checks nothing.
#
# What it needs, since the machine has no internet: the Python environment this repo's
# `make install` makes (a .venv here, or $PYTHON) with
#   - a CUDA build of torch 2.13 (the PyPI Linux wheel is one; the `+cpu` wheel that this
#     project's CPU machines install from their local wheelhouse is NOT: the script stops and
#     says so), and bitsandbytes with its CUDA library (the same wheel carries it);
#   - for step 3 only, onnxruntime-genai-cuda 0.18 + onnxruntime-gpu in place of the CPU
#     onnxruntime-genai / onnxruntime (same module names; `make install` does not install them:
#     without them step 3 is recorded as skipped and steps 1-2 still run).
# When .venv is missing it runs `make install` once (which needs a package index or wheelhouse).
# It fails fast, before anything long, when there is no CUDA GPU or torch cannot see it.
set -uo pipefail

DRY=0
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (use --dry-run, --quick)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
RESULTS="${OUT:-$ROOT/bench}"
LOGS="$RESULTS/gpu_check_logs"
SHAPE_MODEL=phi-3-mini-4k
SHAPE_LAYERS=32
[ "$QUICK" = 1 ] && SHAPE_LAYERS=8
TINY_STEPS=60

STEPS=(
  "env: find the Python environment (.venv, \$PYTHON, or \`make install\`); check nvidia-smi, torch.cuda, bitsandbytes"
  "tiny-qlora: aitk project new (tiny, finetune.method=qlora, bfloat16, $TINY_STEPS steps); aitk finetune --device cuda; aitk rehearse --device cuda --steps 3"
  "shape-build: aitk model build-shape $SHAPE_MODEL --layers $SHAPE_LAYERS"
  "shape-qlora: aitk project new --model $SHAPE_MODEL (CUDA defaults: qlora nf4 bf16 r64, batch 1x4, seq 1024, checkpointing); aitk rehearse --device cuda --steps 3 --layers $SHAPE_LAYERS"
  "shape-lora: the same with finetune.method=lora"
  "export-int4: aitk export --base-only --precision int4 --device cuda (needs onnxruntime-genai-cuda)"
  "decode: onnxruntime-genai on the export, 32-token prompt, 128 new tokens, greedy, median of 3"
  "write $RESULTS/gpu_check.json"
)

if [ "$DRY" = 1 ]; then
  echo "gpu_check (dry run): would run, in $ROOT, writing to $RESULTS:"
  i=0
  for s in "${STEPS[@]}"; do i=$((i + 1)); echo "  $i. $s"; done
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/aitk-gpu-check-XXXXXX")"
fail() { echo "gpu_check: $1" >&2; [ -n "${2:-}" ] && echo "hint: $2" >&2; rm -rf "$WORK"; exit 3; }

# -- 1. environment: fail fast -------------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi: this is not a CUDA machine" \
  "run bench/gpu_check.sh on a machine with an NVIDIA GPU (bench/gpu_check.sh --dry-run shows the steps)"
nvidia-smi -L >/dev/null 2>&1 || fail "nvidia-smi finds no GPU" "check the driver with nvidia-smi"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "gpu_check: no .venv; running make install (needs a package index or wheelhouse)"
    make install >"$WORK/make-install.log" 2>&1 || fail "make install failed (see $WORK/make-install.log)" \
      "this machine has no internet: bring a prepared environment and set PYTHON=/path/to/python"
  fi
  PY="$ROOT/.venv/bin/python"
fi
"$PY" -c "import aitk.core" 2>/dev/null || "$PY" -m pip install -q --no-deps --no-build-isolation -e . \
  >/dev/null 2>&1 || fail "$PY cannot import aitk and the offline editable install failed" \
  "install the project into that environment: $PY -m pip install -e ."
"$PY" - <<'EOF' || fail "torch in this environment cannot use the GPU (see the line above)" \
  "install a CUDA build of torch 2.13 into the environment (pip install torch==2.13.0 from PyPI, not the +cpu wheel)"
import sys
import torch
if torch.version.cuda is None:
    sys.exit(f"torch {torch.__version__} is a CPU-only build")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
import bitsandbytes  # noqa: F401  QLoRA needs its CUDA kernels
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

mkdir -p "$RESULTS" "$LOGS" || fail "cannot write to $RESULTS"
export AITK_DATA_DIR="$WORK/data" AITK_CONFIG_DIR="$WORK/config" AITK_CACHE_DIR="$WORK/cache"
export AITK_PROJECTS_DIR="$WORK/projects" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 CI=1 TOKENIZERS_PARALLELISM=false
AITK=("$PY" -m aitk.cli.main)
STATUS="$WORK/status.tsv"   # step <tab> ok|failed|skipped <tab> seconds <tab> note
: >"$STATUS"

# step NAME CMD...: run with its log in $LOGS/NAME.log, record ok/failed and the wall time.
step() {
  local name="$1"; shift
  local t0=$SECONDS
  echo "== $name: $*"
  if "$@" >"$LOGS/$name.log" 2>&1; then
    printf '%s\tok\t%s\t\n' "$name" $((SECONDS - t0)) >>"$STATUS"; return 0
  fi
  printf '%s\tfailed\t%s\t%s\n' "$name" $((SECONDS - t0)) "$(tail -n 3 "$LOGS/$name.log" | tr '\t\n' '  ')" >>"$STATUS"
  echo "   failed; last lines:"; tail -n 5 "$LOGS/$name.log" | sed 's/^/   /'
  return 1
}
skip() { printf '%s\tskipped\t0\t%s\n' "$1" "$2" >>"$STATUS"; echo "== $1: skipped ($2)"; }

"$PY" - >"$LOGS/env.json" <<'EOF'
import json, platform, torch
import transformers, peft, bitsandbytes
try:
    import onnxruntime_genai as og
    genai = og.__version__
except ImportError:
    genai = None
print(json.dumps({"gpu": torch.cuda.get_device_name(0), "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory,
                  "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                  "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__, "onnxruntime_genai": genai,
                  "python": platform.python_version()}))
EOF

# -- 2. QLoRA on the tiny model --------------------------------------------------------------------
TINY="$WORK/tiny-qlora"
if step tiny-project "${AITK[@]}" project new "$TINY" --model tiny --set finetune.method=qlora \
     --set finetune.compute_dtype=bfloat16 --set finetune.max_steps=$TINY_STEPS --set target.device=cuda; then
  step tiny-finetune "${AITK[@]}" finetune -P "$TINY" --device cuda
  step tiny-rehearse "${AITK[@]}" rehearse -P "$TINY" --device cuda --steps 3 \
    && cp "$TINY/models/rehearsal.json" "$LOGS/tiny-rehearsal.json"
fi

# -- 3. Phi-3-mini at its real shape ---------------------------------------------------------------
SHAPE_DIR=""
if step shape-build "${AITK[@]}" model build-shape "$SHAPE_MODEL" --layers "$SHAPE_LAYERS" --json; then
  SHAPE_DIR="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["path"])' "$LOGS/shape-build.log" 2>/dev/null)"
fi
if [ -n "$SHAPE_DIR" ]; then
  for method in qlora lora; do
    P="$WORK/shape-$method"
    if step "shape-$method-project" "${AITK[@]}" project new "$P" --model "$SHAPE_MODEL" --set target.device=cuda \
         --set finetune.method=$method --set finetune.compute_dtype=bfloat16 --set "model.path=$SHAPE_DIR"; then
      step "shape-$method" "${AITK[@]}" rehearse -P "$P" --device cuda --steps 3 --layers "$SHAPE_LAYERS" \
        && cp "$P/models/rehearsal.json" "$LOGS/shape-$method-rehearsal.json"
    fi
  done
else
  skip shape-qlora "no shape model"; skip shape-lora "no shape model"
fi

# -- 4. CUDA int4 export and its decode speed ------------------------------------------------------
GENAI_CUDA="$("$PY" -c 'import onnxruntime_genai as og; print(int(og.is_cuda_available()))' 2>/dev/null || echo 0)"
EXPORT_DIR="$WORK/shape-qlora/models/onnx/int4"
if [ -z "$SHAPE_DIR" ] || [ ! -d "$WORK/shape-qlora" ]; then
  skip export-int4 "no shape model project"; skip decode "no export"
elif [ "$GENAI_CUDA" != 1 ]; then
  skip export-int4 "onnxruntime-genai here has no CUDA: install onnxruntime-genai-cuda 0.18 and onnxruntime-gpu"
  skip decode "no CUDA genai"
elif step export-int4 "${AITK[@]}" export -P "$WORK/shape-qlora" --base-only --precision int4 --device cuda; then
  step decode "$PY" - "$EXPORT_DIR" "$LOGS/decode.json" <<'EOF'
import json, statistics, sys, time
import onnxruntime_genai as og
model = og.Model(sys.argv[1])
prompt, new = list(range(5, 37)), 128  # 32 ids the tiny tokenizer makes; every one is a real row
def once():
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new, min_length=len(prompt) + new, do_sample=False)
    gen = og.Generator(model, params)
    t0 = time.perf_counter()
    gen.append_tokens(prompt)
    ttft = None
    n = 0
    while not gen.is_done():
        gen.generate_next_token()
        n += 1
        if ttft is None:
            ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return n, ttft, (n - 1) / (total - ttft)
once()  # warm-up: CUDA graphs, allocator
runs = [once() for _ in range(3)]
out = {"new_tokens": runs[0][0], "prompt_tokens": len(prompt), "decode_tokens_per_second": statistics.median(r[2] for r in runs),
       "ttft_seconds": statistics.median(r[1] for r in runs), "runs": runs}
json.dump(out, open(sys.argv[2], "w"))
print(out)
EOF
else
  skip decode "export failed"
fi

# -- 5. one JSON with every figure ---------------------------------------------------------------
"$PY" - "$LOGS" "$STATUS" "$RESULTS/gpu_check.json" "$SHAPE_MODEL" "$SHAPE_LAYERS" <<'EOF'
import json, sys
from pathlib import Path
logs, status, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
def load(name):
    try:
        return json.loads((logs / name).read_text())
    except (OSError, ValueError):
        return None
def rehearsal(name):
    r = load(name)
    if r is None:
        return None
    m, e, s = r["measured"], r["estimated"], r["settings"]
    return {"method": s["method"], "dtype": s["model_dtype"], "lora_r": s["lora_r"], "seq_len": s["seq_len"],
            "batch": s["batch_size"], "accumulation": s["gradient_accumulation_steps"],
            "layers": r["shape"]["layers"], "params": r["shape"]["params"],
            "tokens_per_second": m["tokens_per_second"], "seconds_per_step": m["seconds_per_step"],
            "peak_gpu_bytes": m["cuda_max_allocated_bytes"], "peak_rss_bytes": m["peak_rss_bytes"],
            "estimated_bytes": e["memory_bytes"],
            "gpu_over_estimate": r["ratios"]["memory_measured_over_estimate"],
            "run_steps": r["run"]["steps"], "run_hours": r["run"]["measured_hours"]}
steps = [dict(zip(("step", "status", "seconds", "note"), line.split("\t", 3)))
         for line in status.read_text().splitlines() if line]
report = {"env": load("env.json"), "steps": steps,
          "tiny_qlora": rehearsal("tiny-rehearsal.json"),
          "shape_model": sys.argv[4], "shape_layers": int(sys.argv[5]),
          "shape_qlora": rehearsal("shape-qlora-rehearsal.json"),
          "shape_lora": rehearsal("shape-lora-rehearsal.json"),
          "int4_decode": load("decode.json")}
out.write_text(json.dumps(report, indent=2) + "\n")
print(f"{'step':<24}{'status':<9}{'s':>6}")
for s in steps:
    print(f"{s['step']:<24}{s['status']:<9}{s['seconds']:>6}  {s['note'][:80]}")
for key in ("tiny_qlora", "shape_qlora", "shape_lora"):
    r = report[key]
    if r:
        print(f"{key:<12} {r['tokens_per_second']:9.0f} tok/s  peak {r['peak_gpu_bytes'] / 2**30:6.2f} GiB  "
              f"estimate {r['estimated_bytes'] / 2**30:6.2f} GiB  ({r['gpu_over_estimate']:.2f}x)")
if report["int4_decode"]:
    print(f"int4 decode  {report['int4_decode']['decode_tokens_per_second']:.0f} tok/s")
print(f"written: {out}")
EOF
FAILED=$(grep -c $'\tfailed\t' "$STATUS")
rm -rf "$WORK"
[ "$FAILED" = 0 ]
