"""aitk.core.catalog: the bundled file is valid and sourced, user files merge, estimates are sane."""

from __future__ import annotations

import argparse
import json
import tomllib

import pytest
from pydantic import TypeAdapter, ValidationError

from aitk.cli import catalog_cmds
from aitk.cli.main import build_parser
from aitk.core import catalog as cat
from aitk.core import estimates as est
from aitk.core import paths
from aitk.core.devices import DeviceInfo, Gpu
from aitk.core.errors import AitkError

GB = 10**9
CPU_24G = DeviceInfo(best="cpu", cpu_count=2, ram_mib=24 * 1024, execution_providers=("CPUExecutionProvider",))
CPU_4G = DeviceInfo(best="cpu", cpu_count=8, ram_mib=4 * 1024)
GPU_24G = DeviceInfo(best="cuda", gpus=(Gpu("NVIDIA RTX 4090", 24564, 24000),), cpu_count=16, ram_mib=64 * 1024,
                     execution_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
DML = DeviceInfo(best="dml", cpu_count=8, ram_mib=16 * 1024, execution_providers=("DmlExecutionProvider",))

REQUIRED = {
    "tiny": None,
    "phi-3-mini-4k": "microsoft/Phi-3-mini-4k-instruct",
    "phi-3-mini-128k": "microsoft/Phi-3-mini-128k-instruct",
    "phi-3.5-mini": "microsoft/Phi-3.5-mini-instruct",
    "phi-4-mini": "microsoft/Phi-4-mini-instruct",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "mistral-7b-instruct-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
}


@pytest.fixture
def bundled() -> cat.Catalog:
    return cat.load(include_user=False)


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AITK_CONFIG_DIR", str(tmp_path))
    return tmp_path / "catalog.toml"


# --- The bundled file ---------------------------------------------------------------------------------


def test_bundled_file_validates_against_its_schema():
    raw = tomllib.loads(cat.bundled_path().read_text(encoding="utf-8"))
    parsed = cat.CatalogFile.model_validate(raw)  # strict: unknown keys and bad values are errors
    assert parsed.schema_version == cat.SCHEMA_VERSION and len(parsed.models) >= len(REQUIRED)
    # The published JSON Schema describes the same document.
    schema = cat.schema()
    assert schema["properties"]["models"]["items"]["$ref"].endswith("CatalogEntry")
    entry_schema = schema["$defs"]["CatalogEntry"]
    assert {"id", "source", "params", "license", "gated", "context_length", "lora_targets"} <= set(
        entry_schema["required"]) | set(entry_schema["properties"])
    assert entry_schema["additionalProperties"] is False
    assert set(schema["$defs"]["Variant"]["properties"]["runtime"]["enum"]) == {"cpu", "cuda", "directml"}
    # Round trip: what the loader produces validates again.
    again = TypeAdapter(cat.CatalogFile).validate_python(
        {"models": [e.model_dump(exclude={"origin"}) for e in parsed.models]})
    assert [e.id for e in again.models] == [e.id for e in parsed.models]


def test_every_entry_and_variant_has_a_source(bundled):
    for e in bundled:
        assert e.source.startswith(("https://", "builtin:")), e.id
        assert e.variants, f"{e.id} has no inference variant"
        for v in e.variants:
            assert v.source.startswith(("https://", "builtin:")), (e.id, v.key)
            if v.published:
                assert v.subfolder and v.source.endswith(v.subfolder), (e.id, v.key)
                assert v.download_bytes, (e.id, v.key)
    assert set(cat.RUNTIMES) == {v.runtime for e in bundled if not e.local for v in e.variants}


def test_required_models_are_there_with_their_facts(bundled):
    for model_id, repo in REQUIRED.items():
        e = bundled.get(model_id)
        assert e.repo == repo
    phi = bundled.get("phi-3-mini-4k")
    assert (phi.license, phi.context_length, phi.params_label, phi.gated) == ("MIT", 4096, "3.8B", False)
    assert {v.subfolder for v in phi.variants} >= {
        "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4", "cuda/cuda-int4-rtn-block-32",
        "directml/directml-int4-awq-block-128"}
    assert {v.repo for v in phi.variants} == {"microsoft/Phi-3-mini-4k-instruct-onnx"}
    for llama in ("llama-3.2-1b", "llama-3.2-3b"):
        e = bundled.get(llama)
        assert e.gated and e.license == "Llama 3.2 Community License"
    for apache in ("qwen2.5-0.5b", "qwen2.5-1.5b", "mistral-7b-instruct-v0.3"):
        assert bundled.get(apache).license == "Apache-2.0"
    tiny = bundled.get("tiny")
    assert tiny.local and tiny.repo is None and tiny.source == "builtin:aitk.core.tiny"
    assert bundled.get("phi-3-mini-128k").context_length == 131072


def test_lookup_by_repo_and_variant(bundled):
    assert bundled.get("microsoft/phi-3-mini-4k-instruct").id == "phi-3-mini-4k"
    assert bundled.get("microsoft/Phi-3-mini-4k-instruct-onnx").id == "phi-3-mini-4k"
    phi = bundled.get("phi-3-mini-4k")
    assert phi.variant("cuda").key == "cuda-int4"  # the first (preferred) one
    assert phi.variant("cuda-fp16").subfolder == "cuda/cuda-fp16"
    assert phi.variant("dml").runtime == "directml"
    with pytest.raises(AitkError) as err:
        phi.variant("npu")
    assert "cpu-int4" in err.value.hint
    with pytest.raises(AitkError) as err:
        bundled.get("phi-3-mini")
    assert "did you mean" in err.value.hint and "phi-3-mini-4k" in err.value.hint


# --- The user catalog -----------------------------------------------------------------------------------


def test_user_entries_override_fields_and_add_models(user_file):
    user_file.write_text("""
schema_version = 1

[[models]]
id = "phi-3-mini-4k"
context_length = 8192
description = "my notes"

[[models]]
id = "my-model"
name = "My model"
publisher = "me"
repo = "me/my-model"
source = "https://huggingface.co/me/my-model"
architecture = "LlamaForCausalLM"
params = 100_000_000
license = "Apache-2.0"
gated = false
context_length = 2048
chat_template = "chatml"
lora_targets = ["q_proj", "v_proj"]
hidden_size = 512
num_layers = 8
num_heads = 8
num_kv_heads = 8
intermediate_size = 2048
vocab_size = 32000

[[models.variants]]
runtime = "cpu"
precision = "int4"
repo = "me/my-model-onnx"
subfolder = "cpu"
download_bytes = 80_000_000
source = "https://huggingface.co/me/my-model-onnx"
""")
    c = cat.load()
    assert c.user_file == user_file
    phi = c.get("phi-3-mini-4k")
    assert (phi.context_length, phi.description, phi.origin) == (8192, "my notes", "override")
    assert phi.license == "MIT" and len(phi.variants) >= 3  # untouched fields survive
    mine = c.get("my-model")
    assert mine.origin == "user" and c.ids()[-1] == "my-model"
    assert mine.variant("cpu").allow_patterns == ["cpu/*"]
    assert len(c) == len(cat.load(include_user=False)) + 1


@pytest.mark.parametrize("text, expected", [
    ('[[models]]\nid = "phi-3-mini-4k"\nparams = "lots"\n',
     "field `models[0] (id 'phi-3-mini-4k').params`: Input should be a valid integer"),
    ('[[models]]\nid = "new-one"\nname = "x"\n', "field `models[0] (id 'new-one').publisher`: Field required"),
    ('[[models]]\nid = "phi-3-mini-4k"\nparamz = 3\n', "field `models[0] (id 'phi-3-mini-4k').paramz`: Extra inputs"),
    ('[[models]]\nid = "phi-3-mini-4k"\n[[models.variants]]\nruntime = "tpu"\nprecision = "int4"\nsource = "https://x"\n',
     "field `models[0] (id 'phi-3-mini-4k').variants[0].runtime`: Input should be 'cpu', 'cuda' or 'directml'"),
    ('[[models]]\nid = "phi-3-mini-4k"\nsource = "somewhere"\n', "field `models[0] (id 'phi-3-mini-4k').source`"),
    ('[[models]]\nname = "no id"\n', "field `models[0].id` is missing"),
    ('schema_version = 7\n', "field `schema_version`"),
    ('models = 3\n', "field `models` must be a list"),
    ('[[models]\nid = "x"\n', "not valid TOML"),
])
def test_malformed_user_file_names_file_and_field(user_file, text, expected):
    user_file.write_text(text)
    with pytest.raises(AitkError) as err:
        cat.load()
    assert str(user_file) in err.value.message
    assert expected in err.value.message, err.value.message


# --- Search ---------------------------------------------------------------------------------------------


def test_search_by_text_task_runtime_and_fit(bundled):
    ids = lambda entries: [e.id for e in entries]  # noqa: E731
    assert ids(bundled.search("phi mini"))[:4] == ["phi-3-mini-4k", "phi-3-mini-128k", "phi-3.5-mini", "phi-4-mini"]
    assert set(ids(bundled.search("apache"))) == {"qwen2.5-0.5b", "qwen2.5-1.5b", "mistral-7b-instruct-v0.3"}
    assert ids(bundled.search("meta")) == ["llama-3.2-1b", "llama-3.2-3b"]
    assert "tiny" not in ids(bundled.search(task="code"))
    assert "mistral-7b-instruct-v0.3" in ids(bundled.search(task="function-calling"))
    published_dml = ids(bundled.search(runtime="directml", published_only=True))
    assert published_dml == ["phi-3-mini-4k", "phi-3-mini-128k", "phi-3.5-mini", "phi-4-mini"]
    small = ids(bundled.search(where=lambda e: est.fits(e, CPU_4G).ok is not False))
    assert "tiny" in small and "qwen2.5-0.5b" in small and "mistral-7b-instruct-v0.3" not in small
    assert bundled.search("nothing-like-this") == []


# --- Memory and fit -------------------------------------------------------------------------------------


def test_lora_parameter_count_follows_the_shapes(bundled):
    phi = bundled.get("phi-3-mini-4k")  # hidden 3072, inter 8192, 32 heads = kv heads, 32 layers
    per_layer = 8 * ((3072 + 3 * 3072) + (3072 + 3072) + (3072 + 2 * 8192) + (8192 + 3072))
    assert est.lora_param_count(phi, 8) == 32 * per_layer
    qwen = bundled.get("qwen2.5-0.5b")  # GQA: k/v project to 2 heads of 64
    assert est.lora_param_count(qwen, 1, ["k_proj"]) == 24 * (896 + 128)


def test_memory_estimates(bundled):
    phi = bundled.get("phi-3-mini-4k")
    lora_gpu = est.memory_estimate(phi, "lora", "cuda")
    qlora_gpu = est.memory_estimate(phi, "qlora", "cuda")
    assert lora_gpu.assumptions["compute_dtype"] == "bfloat16"
    assert lora_gpu.parts["weights"] == int(phi.params * 2)
    assert qlora_gpu.parts["weights"] < lora_gpu.parts["weights"] / 3
    assert 9 * GB < lora_gpu.total < 14 * GB and 4 * GB < qlora_gpu.total < 8 * GB
    assert set(lora_gpu.parts) == {"weights", "adapter", "gradients", "optimizer", "activations", "logits", "overhead"}
    cpu = est.memory_estimate(phi, "lora", "cpu")
    assert cpu.assumptions["compute_dtype"] == "float32" and cpu.parts["weights"] == phi.params * 4
    # Knobs move the estimate the right way.
    big_batch = est.memory_estimate(phi, "lora", "cuda", batch_size=8, gradient_checkpointing=False)
    assert big_batch.parts["activations"] > 10 * lora_gpu.parts["activations"]
    assert est.memory_estimate(phi, "lora", "cuda", lora_r=8).parts["optimizer"] == \
        lora_gpu.parts["optimizer"] // 8
    # Inference uses the published build's size, plus KV cache for the context.
    inf = est.memory_estimate(phi, "inference", "cpu")
    assert inf.parts["weights"] == phi.variant("cpu").download_bytes
    assert inf.parts["kv_cache"] == 2 * 32 * 32 * 96 * 4096 * 4
    short = est.memory_estimate(phi, "inference", "cpu", context=1024)
    assert short.parts["kv_cache"] == inf.parts["kv_cache"] // 4
    # A locally built int4 model: embeddings in fp32 on CPU, the rest 4-bit.
    qwen = bundled.get("qwen2.5-0.5b")
    w = est.memory_estimate(qwen, "inference", "cpu").parts["weights"]
    emb = 151936 * 896
    assert w == int(emb * 4 + (qwen.params - emb) * 0.5625)
    assert "weights" in inf.describe() and inf.describe().startswith(cat.human_bytes(inf.total))
    with pytest.raises(AitkError):
        est.memory_estimate(phi, "full-finetune")


def test_fits_per_device(bundled):
    tiny, phi, mistral = bundled.get("tiny"), bundled.get("phi-3-mini-4k"), bundled.get("mistral-7b-instruct-v0.3")
    f = est.fits(tiny, CPU_24G, "lora")
    assert f.ok and f.speed == "ok" and f.practical and f.device == "cpu"
    f = est.fits(phi, CPU_24G, "qlora")
    assert f.ok and f.speed == "impractical" and not f.practical
    assert "impractical on CPU" in f.summary()
    assert est.fits(mistral, CPU_24G, "lora").ok is False
    assert est.fits(phi, GPU_24G, "qlora").ok and est.fits(phi, GPU_24G, "qlora").speed is None
    gpu_16g = DeviceInfo(best="cuda", gpus=(Gpu("NVIDIA T4", 15360, 15000),), cpu_count=8, ram_mib=32 * 1024)
    assert est.fits(mistral, gpu_16g, "lora").ok is False and est.fits(mistral, gpu_16g, "qlora").ok
    assert est.fits(mistral, GPU_24G, "lora").ok  # ~19 GB: bf16 7B LoRA with checkpointing, batch 1
    assert est.fits(phi, DML, "inference").ok is None  # DirectML memory unknown
    assert "device memory unknown" in est.fits(phi, DML, "inference").summary()
    assert est.fits(phi, CPU_4G, "inference").ok is False


def test_recommended_variant_per_machine(bundled):
    phi = bundled.get("phi-3-mini-4k")
    assert est.recommend_variant(phi, GPU_24G).key == "cuda-int4"
    assert est.recommend_variant(phi, CPU_24G).key == "cpu-int4"
    assert est.recommend_variant(phi, DML).key == "directml-int4"
    assert est.recommend_variant(phi, CPU_4G) is None  # nothing fits 4 GB
    assert est.recommend_variant(bundled.get("tiny"), CPU_4G).key == "cpu-fp32"
    assert not est.recommend_variant(bundled.get("qwen2.5-0.5b"), CPU_24G).published


# --- CLI ------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    return build_parser()


def run(argv, capsys):
    args = parser().parse_args(argv)
    return args.func(args), capsys.readouterr().out


def test_cli_catalog_list_show_search(capsys):
    code, out = run(["catalog", "list"], capsys)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "PARAMS", "CONTEXT"]
    assert "phi-3-mini-4k" in out and "cpu,cuda,directml" in out and "cpu*,cuda*,directml*" in out
    code, out = run(["catalog"], capsys)  # bare `catalog` lists too
    assert code == 0 and "mistral-7b-instruct-v0.3" in out
    code, out = run(["catalog", "list", "--json"], capsys)
    assert [m["id"] for m in json.loads(out)][:2] == ["tiny", "phi-3-mini-4k"]
    code, out = run(["catalog", "search", "llama", "--json"], capsys)
    assert [m["id"] for m in json.loads(out)] == ["llama-3.2-1b", "llama-3.2-3b"]
    code, out = run(["catalog", "search", "zzz"], capsys)
    assert code == 1 and "no model matches" in out
    code, out = run(["catalog", "show", "phi-3-mini-4k"], capsys)
    assert "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4" in out and "MIT" in out
    assert "on this machine" in out and "aitk model pull phi-3-mini-4k" in out
    code, out = run(["catalog", "show", "llama-3.2-1b", "--json"], capsys)
    data = json.loads(out)
    assert data["gated"] and set(data["fits"]) == {"inference", "lora", "qlora"}
    with pytest.raises(AitkError, match="no model 'gpt-5'"):
        run(["catalog", "show", "gpt-5"], capsys)


def test_each_command_group_is_its_own_module():
    from aitk.cli import doctor_cmds, model_cmds

    ap = build_parser()
    assert ap.parse_args(["model", "pull", "tiny", "--variant", "cpu"]).func is model_cmds.cmd_model_pull
    assert ap.parse_args(["model", "build-tiny"]).func is model_cmds.cmd_build_tiny
    assert ap.parse_args(["doctor", "--json"]).func is doctor_cmds.cmd_doctor
    assert ap.parse_args(["catalog", "search", "phi"]).func is catalog_cmds.cmd_catalog_search


def test_bundled_catalog_is_package_data():
    assert cat.bundled_path() == paths.bundled_data() / "catalog.toml" and cat.bundled_path().is_file()
    with pytest.raises(ValidationError):
        cat.Variant(runtime="cpu", precision="int4", subfolder="x", source="https://x")  # subfolder needs repo
