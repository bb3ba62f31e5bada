"""Compression techniques on the digits CNN and tiny modules: each does what it claims, chains
compose in order, configs round-trip, bad aliases fail clearly, and variant rows are measured,
stored with their figures and judged against the recipe's goals."""

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import USER_MODELS, run_cli
from tvmharness.compress import REGISTRY, Variant, apply_variant, parse_variant
from tvmharness.compress.metrics import sparsity, weight_layers
from tvmharness.compress.quantize import INT8_TOLERANCE
from tvmharness.compress.training import evaluate
from tvmharness.errors import HarnessError
from tvmharness.models import load_model
from tvmharness.pipeline import NOT_APPLICABLE, OK, run_recipe
from tvmharness.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def digits(workdir):
    return load_model("digits_cnn", workdir / "cache")


def outputs(module, model) -> torch.Tensor:
    with torch.no_grad():
        return module(torch.from_numpy(model.eval_data.arrays[0]))


def test_unstructured_pruning_reaches_its_sparsity_per_layer_and_globally(digits, workdir):
    per_layer = apply_variant(digits, "prune:0.5", workdir / "cache")
    for layer in weight_layers(per_layer.torch_module):
        assert (layer.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert per_layer.compression["sparsity"] == pytest.approx(0.5, abs=0.005)
    assert not any(n.endswith("_orig") for n, _ in per_layer.torch_module.named_parameters())  # masks made permanent
    gradual = apply_variant(digits, "prune:0.8,scope=global,schedule=gradual,steps=2", workdir / "cache")
    assert sparsity(gradual.torch_module) == pytest.approx(0.8, abs=0.005)
    layer_shares = [(m.weight == 0).float().mean().item() for m in weight_layers(gradual.torch_module)]
    assert max(layer_shares) - min(layer_shares) > 0.05  # global: layers pruned unevenly
    assert evaluate(gradual.torch_module, digits) > 0.9  # the fine-tune between steps kept it working
    assert sparsity(digits.torch_module) == 0.0  # the model given is untouched


def test_pruned_attention_layers_train_like_the_others(workdir):
    """nn.MultiheadAttention reads out_proj's weight without calling out_proj: gradual pruning trains
    through it (it crashed on the second step), and a fine-tune trains it, its pruned zeros kept."""
    model = load_model(f"{USER_MODELS}:tiny_transformer", workdir / "cache")
    gradual = apply_variant(model, "prune:0.5,schedule=gradual,steps=2,epochs=1", workdir / "cache")
    assert sparsity(gradual.torch_module, weight_layers(gradual.torch_module)) == pytest.approx(0.5, abs=0.01)
    # the embedding's table and attention's input projection are no conv/linear layer's: left dense, and said
    assert gradual.compression["sparsity"] == pytest.approx(0.30, abs=0.01)
    assert ("left as they are, being no conv/linear layer's: Embedding 800, MultiheadAttention 768 weights "
            "(40% of the model's)") in gradual.notes[-1]
    pruned, tuned = (apply_variant(model, v, workdir / "cache").torch_module.encoder.layers[0].self_attn.out_proj.weight
                     for v in ("prune:0.5", "prune:0.5+finetune:1"))
    assert not torch.equal(pruned, tuned) and bool(((pruned == 0) == (tuned == 0)).all())


def test_channel_pruning_makes_the_network_smaller(digits, workdir):
    pruned = apply_variant(digits, "channels:0.5", workdir / "cache")
    convs = [m for m in pruned.torch_module.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    base = digits.compression or apply_variant(digits, "fp32").compression
    assert pruned.compression["params"] < 0.35 * base["params"]
    assert pruned.compression["flops"] < 0.35 * base["flops"]
    assert outputs(pruned.torch_module, digits).shape == (len(digits.eval_data), 10)


def test_channel_pruning_keeps_the_layers_that_give_the_outputs_whatever_their_kind(workdir):
    """squeezenet's classifier is a conv, resnet18's a Linear: each keeps its 1000 classes."""
    from tvmharness.compress.prune import output_layers

    for name, head in (("squeezenet1_1", "classifier.1"), ("resnet18", "fc")):
        model = load_model(name, workdir / "cache")
        names = {id(m): n for n, m in model.torch_module.named_modules()}
        assert [names[id(m)] for m in output_layers(model.torch_module, model.example())] == [head]
    pruned = apply_variant(model, "channels:0.5", workdir / "cache")  # resnet18
    assert pruned.compression["params"] < 0.4 * apply_variant(model, "fp32").compression["params"]
    assert pruned.torch_module(*model.example()).shape == (1, 1000)
    frozen = model.torch_module.requires_grad_(False)  # as inference code often leaves a model
    assert [names[id(m)] for m in output_layers(frozen, model.example())] == ["fc"]
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.requires_grad_(True)
    squeezenet = load_model("squeezenet1_1", workdir / "cache")
    assert apply_variant(squeezenet, "channels:0.5", workdir / "cache").torch_module(*squeezenet.example()).shape == (1, 1000)


def test_channel_pruning_of_a_model_with_only_its_output_layer_does_not_apply(workdir):
    from tvmharness.compress import NotApplicable

    model = load_model(f"{USER_MODELS}:one_linear", workdir / "cache")
    with pytest.raises(NotApplicable, match="no channel of one_linear can be removed"):
        apply_variant(model, "channels:0.5", workdir / "cache")


def test_techniques_that_cannot_apply_say_why_and_the_run_goes_on(tmp_path):
    from tests.user_models import tiny_mlp

    module, example = tiny_mlp()
    pt2 = tmp_path / "exported.pt2"
    torch.export.save(torch.export.export(module, (example,)), str(pt2))
    recipe = recipe_from_dict({"name": "n/a", "models": [f"{USER_MODELS}:two_heads", str(pt2)],
                               "variants": ["fp32", "channels:0.5", "prune:0.5", "fp16"], "engines": ["torch"],
                               "output": {"dir": str(tmp_path), "store": str(tmp_path / "h.db")}})
    rows = {(r["model"], r["variant"]): r for r in run_recipe(recipe).rows}
    # Both of two_heads' layers give an output (the logits, the features): neither may lose channels.
    assert rows[("two_heads", "channels:0.5")]["status"] == NOT_APPLICABLE
    assert "no channel of two_heads can be removed" in rows[("two_heads", "channels:0.5")]["reason"]
    assert rows[("two_heads", "channels:0.5")]["details"]["compression"][0]["kind"] == "channels"  # not fp32's figures
    assert "params" not in rows[("two_heads", "channels:0.5")]["details"]
    # torch.export keeps the weights of a .pt2 but not its nn.Linear layers, which pruning works on.
    for variant in ("channels:0.5", "prune:0.5"):
        assert rows[("exported", variant)]["status"] == NOT_APPLICABLE
        assert "an ExportedProgram (.pt2) keeps its weights but not its layers" in rows[("exported", variant)]["reason"]
    ok = {key for key, r in rows.items() if r["status"] == OK}
    assert ok == {("two_heads", "fp32"), ("two_heads", "prune:0.5"), ("two_heads", "fp16"), ("exported", "fp32"),
                  ("exported", "fp16")}
    # The HTML report carries the compression table and its notes, as the terminal's does.
    from tvmharness.report.html import render_html
    from tvmharness.results import Store

    page = render_html(Store(str(tmp_path / "h.db")))
    assert "<h2>Compression: each variant against fp32 on the same target and engine</h2>" in page
    assert page.count("<td>not applicable</td>") == 3 and "best variant of two_heads on x86" in page
    assert "max |diff| is against the variant run by torch (do the engines agree?); top-1 agree against fp32" in page


def test_a_model_of_several_inputs_is_compressed_and_each_variant_agrees_on_every_engine(tmp_path):
    """int8 calibrates on seeded ids within the example's range and a float mask; fp16 halves the
    mask but not the ids; pruning and fine-tuning trace the model with both inputs."""
    recipe = recipe_from_dict({"name": "tokens", "models": [f"{USER_MODELS}:token_classifier"],
                               "variants": ["fp32", "int8", "fp16", "prune:0.5+finetune:1", "lowrank:rank=2"],
                               "engines": ["tvm", "torch", "onnxruntime"], "measure": {"repeats": 30, "threads": 2},
                               "output": {"dir": str(tmp_path), "store": str(tmp_path / "h.db")}})
    rows = run_recipe(recipe).rows
    measured = {(r["variant"], r["engine"]): r for r in rows if r["status"] != NOT_APPLICABLE}
    assert set(measured) == {(v, e) for v in ("fp32", "fp16", "prune:0.5+finetune:1", "lowrank:rank=2") for e in ("tvm", "torch", "onnxruntime")} | {
        ("int8", "tvm"), ("int8", "onnxruntime")}  # PyTorch cannot run the quantizer's ONNX
    for key, row in measured.items():
        assert row["status"] == OK, (key, row["reason"])  # OK: within tolerance of its own uncompressed engine
        assert row["details"]["inputs"][0]["dtype"] == "int64" and row["details"]["flops"] > 0
    pruned = measured[("prune:0.5+finetune:1", "torch")]
    # half of its conv/linear weights; of the model's, less: its embedding's table is left as it is, and said
    assert 0.01 < pruned["details"]["sparsity"] < 0.1
    notes = " ".join(pruned["details"]["notes"])
    assert "sparsity 50.0% of conv/linear weights" in notes and "no conv/linear layer's: Embedding" in notes
    assert measured[("int8", "tvm")]["details"]["tvm_int8_kernels"]["integer"]


@pytest.mark.parametrize("spec, batches", [("two_heads", "8 new batches of 4 each"), ("fixed_batch", "32 new batches of 1 each")])
def test_a_fine_tune_without_data_brings_a_pruned_model_back_towards_fp32(workdir, spec, batches):
    """No labelled data: fine-tuning matches every output of the fp32 model on new seeded noise each
    epoch, at batch 4, or at its own batch for a model that reshapes to its example's."""
    from tvmharness.data import random_feeds

    model = load_model(f"{USER_MODELS}:{spec}", workdir / "cache")
    feeds = [tuple(torch.from_numpy(a) for a in feed) for feed in random_feeds(model.inputs, 32, seed=99)]

    def errors(module) -> np.ndarray:  # mean squared error to fp32, per output, on inputs training never saw
        with torch.no_grad():
            pairs = [(torch.utils._pytree.tree_leaves(module(*f)), torch.utils._pytree.tree_leaves(model.torch_module(*f)))
                     for f in feeds]
        return np.array([np.mean([((got[k] - ref[k]) ** 2).mean().item() for got, ref in pairs]) for k in range(len(pairs[0][0]))])

    pruned = errors(apply_variant(model, "prune:0.7", workdir / "cache").torch_module)
    tuned = apply_variant(model, "prune:0.7+finetune:epochs=30,lr=3e-3", workdir / "cache")
    assert batches in tuned.notes[-1]
    after = errors(tuned.torch_module)
    assert after[0] < 0.7 * pruned[0]  # the logits come back
    # Features of independent noise inputs lose what pruned weights carried, which no other weight can
    # restore; matching every output keeps them from drifting while the logits are pulled back.
    assert np.all(after[1:] < 1.05 * pruned[1:])


def test_a_transformer_s_flops_count_its_attention_and_layers_its_modules_read_stay_whole(tmp_path, workdir):
    """nn.TransformerEncoderLayer runs one fused kernel at inference, and attention another on a CPU,
    neither of which torch's FLOP counter sees; it reads its Linear layers' weights itself, so they cannot
    be swapped for factored ones."""
    from tvmharness.compress import baseline_metrics
    from tvmharness.compress.base import NotApplicable
    from tvmharness.engines import EngineOptions, get_engine
    from tvmharness.targets import resolve

    model = load_model(f"{USER_MODELS}:tiny_transformer", workdir / "cache")
    assert [(i.name, i.dtype, i.value_range) for i in model.inputs] == [("input_ids", "int64", model.inputs[0].value_range),
                                                                        ("attention_mask", "int64", (0, 1))]
    # in_proj 16->48, out_proj 16->16, linear1 16->64, linear2 64->16: 2 x 3072 FLOPs per token, 8 tokens;
    # attention's two products, 2 heads of 8 x 8 x 8 each; the head, 16->4 on the first token
    assert baseline_metrics(model)["flops"] == 2 * 3072 * 8 + 2 * (2 * 2 * 8 * 8 * 8) + 2 * 16 * 4
    read = "encoder.layers.0.self_attn.out_proj encoder.layers.0.linear1 encoder.layers.0.linear2"
    factored = apply_variant(model, parse_variant("lowrank:rank=2"), workdir / "cache")  # the head is called: factored
    assert factored.compression["lowrank_layers"] == ["head:2/4"]
    assert f"left whole as their modules read their weights: {read}" in factored.notes[-1]
    with pytest.raises(NotApplicable) as err:  # at rank 4 the head would not shrink: nothing is left to factor
        apply_variant(model, parse_variant("lowrank:rank=4"), workdir / "cache")
    assert f"read their weights ({read})" in err.value.cause
    # Padding masks of seeded zeros and ones reach TVM's attention as they reach PyTorch's.
    session = get_engine("tvm").prepare(model, resolve("x86", 2), EngineOptions(cache_dir=workdir / "cache", threads=2))
    feeds = model.samples(3)
    assert {int(v) for f in feeds for v in f[1].ravel()} == {0, 1}
    for feed in feeds:
        expected = model.torch_module(*(torch.from_numpy(a) for a in feed)).detach().numpy()
        np.testing.assert_allclose(session.run(feed)[0], expected, rtol=1e-4, atol=1e-5)
    # int8: the Linear layers on 3-D activations (their weights stored (in, out)) get integer kernels in
    # TVM; the two attention products of activations stay fp32, and the outputs agree with ONNX Runtime's.
    quantized = apply_variant(model, parse_variant("int8"), workdir / "cache")
    kernels = quantized.compression["tvm_int8_kernels"]
    assert kernels["integer"] == {"matmul": 5}  # in_proj, out_proj, linear1, linear2, head
    assert kernels["float_fallback"] == {"matmul: both inputs are activations (e.g. attention scores), not an "
                                         "activation and a weight": 2}
    tvm_int8 = get_engine("tvm").prepare(quantized, resolve("x86", 2), EngineOptions(cache_dir=workdir / "cache", threads=2))
    ort_int8 = get_engine("onnxruntime").prepare(quantized, resolve("x86", 2), EngineOptions(cache_dir=workdir / "cache", threads=2))
    fp32 = [model.torch_module(*(torch.from_numpy(a) for a in feed)).detach().numpy() for feed in feeds]
    scale = max(float(np.abs(f).max()) for f in fp32)
    for feed, reference in zip(feeds, fp32):
        ours, theirs = tvm_int8.run(feed)[0], ort_int8.run(feed)[0]
        assert np.abs(ours - theirs).max() <= INT8_TOLERANCE * np.abs(theirs).max()
        # The padding mask's -inf stays float: quantized, it made both engines' int8 models noise
        assert np.abs(ours - reference).max() <= 0.1 * scale


def test_a_padding_mask_s_infinite_range_says_nothing_as_int8_calibrates(tmp_path):
    """A tensor of -inf (a padding mask's) calibrates to an infinite range, whose zero point ORT computes
    as inf / inf: numpy's "invalid value encountered in divide" was printed among the progress lines. Its
    operators stay float, so that zero point is never used: every Q/DQ node's scale is finite."""
    import warnings

    import onnx

    model = load_model(f"{USER_MODELS}:tiny_transformer", tmp_path / "cache")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        quantized = apply_variant(model, parse_variant("int8"), tmp_path / "cache")  # a cache of its own: calibrated here
    assert [str(w.message) for w in said if issubclass(w.category, RuntimeWarning)] == []
    graph = onnx.load(str(quantized.onnx_path)).graph
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(np.isfinite(scales[n.input[1]]).all() for n in qdq if n.input[1] in scales)


def test_the_zoo_s_text_model_and_its_int8_variant_agree_on_every_engine(tmp_path):
    """bert_tiny: token ids within its vocabulary and a padding mask reach TVM, PyTorch and ONNX
    Runtime; its int8 output (a range wide against its values) agrees within a few quantization steps."""
    recipe = recipe_from_dict({"name": "text", "models": ["bert_tiny"], "variants": ["fp32", "int8"],
                               "engines": ["tvm", "torch", "onnxruntime"], "measure": {"repeats": 30, "threads": 2},
                               "output": {"dir": str(tmp_path), "store": str(tmp_path / "h.db")}})
    rows = {(r["variant"], r["engine"]): r for r in run_recipe(recipe).rows}
    for key in (("fp32", "torch"), ("fp32", "tvm"), ("fp32", "onnxruntime"), ("int8", "tvm"), ("int8", "onnxruntime")):
        assert rows[key]["status"] == OK, (key, rows[key]["reason"])
    int8 = rows[("int8", "tvm")]["details"]
    assert int8["tolerance_floors"][0] > 0 and int8["flops"] > 50e6  # attention and feed-forward layers counted
    assert int8["tvm_int8_kernels"]["integer"]["matmul"] >= 8


def test_int8_of_a_deep_model_is_judged_by_int8_s_own_rounding_and_its_artifact_is_written(tmp_path):
    """In a deeper model a rounding that flips early grows through the layers after it: TVM's int8 and
    ONNX Runtime's differ by more than a few of the output's quantization steps, as each differs from
    fp32. An output's floor is then twice how far int8 moves it from fp32 on ONNX Runtime, so a
    correct int8 artifact is written (it was refused)."""
    import json

    import onnx

    from tvmharness.compress.quantize import ERROR_MARGIN, OUTPUT_STEPS_ALLOWED, _int8_tolerance, _output_steps

    done = run_cli("compile", f"{USER_MODELS}:tiny_vit", "--variant", "int8", "--output-dir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    check = json.loads(done.stdout)["manifest"]["check"]
    [int8] = (tmp_path / "cache" / "int8").glob("*/*-int8.onnx")
    graph = onnx.load(str(int8)).graph
    [step] = _output_steps(graph)
    [floor] = check["tolerance_floors"]
    assert check["checked"] and check["max_abs_diff"] <= floor
    assert floor > OUTPUT_STEPS_ALLOWED * step  # int8's own distance from fp32 is more than three steps here
    assert _int8_tolerance(graph, [floor])["tolerance_floors"] == [2 * floor]  # twice that distance
    assert _int8_tolerance(graph, [0.0])["tolerance_floors"] == [OUTPUT_STEPS_ALLOWED * step]  # or three steps
    [kept] = int8.parent.glob("error-*.json")  # the measured distance, kept for the next run's apply
    assert json.loads(kept.read_text()) == [floor / ERROR_MARGIN]


def test_every_variant_s_artifact_returns_the_outputs_of_the_fp32_one(tmp_path):
    """A deployer swaps an int8 or fp16 artifact in for the fp32 one: the same outputs, by the same names
    (int8 gave the ONNX graph's node names) and dtypes (fp16 gave a float argmax and mask)."""
    import json

    manifests = {}
    for variant in ("fp32", "int8", "fp16"):
        done = run_cli("compile", f"{USER_MODELS}:picks", "--variant", variant, "--output-dir", str(tmp_path), "--json")
        assert done.returncode == 0, done.stderr
        manifests[variant] = json.loads(done.stdout)["manifest"]
    assert manifests["fp32"]["outputs"] == [{"name": "logits", "shape": [1, 4], "dtype": "float32"},
                                            {"name": "picked.0", "shape": [1], "dtype": "int64"},
                                            {"name": "picked.1", "shape": [1, 4], "dtype": "bool"}]
    assert manifests["int8"]["outputs"] == manifests["fp16"]["outputs"] == manifests["fp32"]["outputs"]
    assert all(m["check"]["checked"] for m in manifests.values())
    assert manifests["int8"]["check"]["tolerance_floors"][1:] == [0.0, 0.0]  # no distance between two classes


def test_channel_pruning_of_a_transformer_keeps_whole_heads_and_the_model_runs(workdir):
    """Attention's width must stay a whole number of heads: 30% of 32 channels in 4 heads made a model
    that raised when measured ("embed_dim must divide evenly by num_heads")."""
    model = load_model(f"{USER_MODELS}:narrow_vit", workdir / "cache")
    pruned = apply_variant(model, "channels:0.3", workdir / "cache")
    attention = [m for m in pruned.torch_module.modules() if isinstance(m, nn.MultiheadAttention)]
    assert attention and all(m.embed_dim % m.num_heads == 0 for m in attention)
    assert pruned.compression["params"] < sum(p.numel() for p in model.torch_module.parameters())  # its feed-forward layers
    with torch.no_grad():
        assert pruned.torch_module(*model.example()).shape == (1, 10)


def test_low_rank_factors_layers_to_the_rank_asked(digits, workdir):
    ranked = apply_variant(digits, "lowrank:rank=4", workdir / "cache").torch_module
    factored = [m for m in ranked.modules() if isinstance(m, nn.Sequential) and len(m) == 2
                and isinstance(m[0], (nn.Conv2d, nn.Linear)) and not isinstance(m[1], nn.ReLU)]
    assert len(factored) == 4
    for first, _second in factored:
        assert (first.out_channels if isinstance(first, nn.Conv2d) else first.out_features) == 4
    kept = apply_variant(digits, "lowrank:energy=0.95", workdir / "cache")
    assert kept.compression["lowrank_layers"] == ["classifier.1:50/64"]  # the one layer smaller at 95% of its energy
    agree = (outputs(kept.torch_module, digits).argmax(1) == outputs(digits.torch_module, digits).argmax(1)).float().mean()
    assert agree > 0.98  # keeping most of the energy keeps the function
    from tvmharness.compress import NotApplicable

    with pytest.raises(NotApplicable, match="no layer of digits_cnn gets smaller factored at rank 64"):
        apply_variant(digits, "lowrank:rank=64", workdir / "cache")  # it would be fp32 under another name


def test_clustering_leaves_n_values_per_layer_and_reports_the_compressed_size(digits, workdir):
    clustered = apply_variant(digits, "cluster:8", workdir / "cache")
    for layer in weight_layers(clustered.torch_module):
        assert len(torch.unique(layer.weight)) <= 8
    params = clustered.compression["params"]
    assert clustered.compression["compressed_bytes"] < params * 4 / 5  # 3-bit indices + centroids (+ fp32 biases)
    # a fine-tune after clustering re-clusters, so the claim still holds
    tuned = apply_variant(digits, "cluster:4+finetune:1", workdir / "cache").torch_module
    assert all(len(torch.unique(m.weight)) <= 4 for m in weight_layers(tuned))
    # pruned zeros stay zero through clustering and the fine-tune after it (zero is one of the N values)
    chain = apply_variant(digits, "prune:0.5+cluster:16+finetune:1", workdir / "cache")
    assert chain.compression["sparsity"] == pytest.approx(0.5, abs=0.005)
    assert all(len(torch.unique(m.weight)) <= 16 for m in weight_layers(chain.torch_module))
    # fp16 after clustering stores half-precision weights, not cluster indices: no compressed size is claimed
    half = apply_variant(digits, "cluster:16+fp16", workdir / "cache")
    assert half.compression["compressed_bytes"] is None and "no compressed size: fp16 after clustering" in half.notes[-1]
    # channels removed after clustering leave the others' values: a smaller compressed size, said as such
    from tvmharness.compress.metrics import clustered_bytes

    narrower = apply_variant(digits, "cluster:16+channels:0.3", workdir / "cache")
    layers = {n: 16 for n, m in narrower.torch_module.named_modules() if m in weight_layers(narrower.torch_module)}
    assert narrower.compression["compressed_bytes"] == clustered_bytes(narrower.torch_module, layers) < 20_608
    assert narrower.notes[-1] == f"compressed size after channels: {narrower.compression['compressed_bytes']} B"
    # a layer no smaller as indices + centroids (the first conv: 144 weights, 256 values) stays fp32; a count no layer gains from does nothing
    wide = apply_variant(digits, "cluster:256", workdir / "cache")
    assert len(wide.torch_module.features[0].weight.unique()) == 144 and "1 layer(s) too small to gain left fp32" in wide.notes[-1]
    assert wide.compression["compressed_bytes"] < wide.compression["params"] * 4
    from tvmharness.compress import NotApplicable

    with pytest.raises(NotApplicable, match="clustering would change nothing; give fewer clusters"):
        apply_variant(digits, "cluster:65536", workdir / "cache")


def test_a_weight_tied_to_another_module_stays_whole_and_is_counted_once(workdir):
    """The output layer shares the embedding's weight: factoring or channel-pruning it would keep the
    shared matrix beside the new one, or untie the two; clustering it clusters both, one tensor."""
    from tvmharness.compress import NotApplicable

    model = load_model(f"{USER_MODELS}:tied_embedding", workdir / "cache")
    base = apply_variant(model, "fp32").compression["params"]
    with pytest.raises(NotApplicable, match="the weights of emb.weight = out.weight are tied"):
        apply_variant(model, "lowrank:0.9", workdir / "cache")  # out is tied, hidden would not get smaller
    ranked = apply_variant(model, "lowrank:rank=2", workdir / "cache")
    assert ranked.compression["lowrank_layers"] == ["hidden:2/32"] and ranked.compression["params"] < base
    assert "left whole as their weights are tied: emb.weight = out.weight" in ranked.notes[-1]
    assert ranked.torch_module.out.weight is ranked.torch_module.emb.weight
    with pytest.raises(NotApplicable, match="would untie the weights of emb.weight = out.weight"):
        apply_variant(model, "channels:0.5", workdir / "cache")
    clustered = apply_variant(model, "cluster:16", workdir / "cache")
    assert clustered.torch_module.out.weight is clustered.torch_module.emb.weight
    # 4-bit indices of the shared 100x32 and hidden's 32x32, 16 fp32 centroids each, fp32 biases (32 + 100)
    assert clustered.compression["compressed_bytes"] == (100 * 32 + 32 * 32) * 4 // 8 + 2 * 16 * 4 + (32 + 100) * 4


def test_parametrized_weights_are_compressed_on_a_copy_without_their_parametrizations(workdir):
    from torch.nn.utils import parametrize

    model = load_model(f"{USER_MODELS}:weight_normed", workdir / "cache")
    example = model.example()
    with torch.no_grad():
        before = model.torch_module(*example)
    clustered = apply_variant(model, "cluster:16", workdir / "cache")
    assert all(len(torch.unique(m.weight)) <= 16 for m in weight_layers(clustered.torch_module))
    assert "parametrizations removed on this variant's copy" in " ".join(clustered.notes)
    pruned = apply_variant(model, "prune:0.5", workdir / "cache")
    assert pruned.compression["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert apply_variant(model, "channels:0.5", workdir / "cache").compression["params"] < 0.5 * 5898
    # the model as given keeps its parametrizations and its outputs
    assert all(parametrize.is_parametrized(model.torch_module.net[i]) for i in (0, 2, 4))
    with torch.no_grad():
        assert torch.equal(model.torch_module(*example), before)


def test_compressing_a_recurrent_model_says_what_it_leaves_as_it_was(workdir):
    """An LSTM's matrices are no conv/linear layer's: pruning half of the conv/linear weights of a
    keyword spotter is 2% of its weights, and its figures and notes say so, not 50%; int8 leaves the
    LSTM float, and says so."""
    model = load_model(f"{USER_MODELS}:lstm_last_step", workdir / "cache")
    pruned = apply_variant(model, "prune:0.5", workdir / "cache")
    assert pruned.compression["sparsity"] == pytest.approx(32 / 1600)  # the Linear's 32 of the model's 1,600 weights
    assert pruned.notes[-1].endswith("sparsity 50.0% of conv/linear weights, 2.0% of the model's weights; left as they are, being no "
                                     "conv/linear layer's: LSTM 1,536 weights (96% of the model's)")
    clustered = apply_variant(model, "cluster:16", workdir / "cache")
    assert "clustered the weights of 1 conv/linear layers" in clustered.notes[-1] and "LSTM 1,536 weights" in clustered.notes[-1]
    # ONNX Runtime's quantizer leaves the LSTM float too, and int8's note says so (not of convolutions it has none of)
    for variant in ("int8", "int8:dynamic"):
        quantized = apply_variant(model, variant, workdir / "cache")
        assert quantized.compression["quantized_ops"]["float"]["LSTM"] == 1
        note = next(n for n in quantized.notes if n.startswith("int8"))
        assert "fp32 fallback for {'LSTM': 1}" in note and "ConvInteger" not in note, note
    # a GRU fed by a quantized convolution reads an int8 activation, and its weights are float all the same
    quantized = apply_variant(load_model(f"{USER_MODELS}:conv_gru", workdir / "cache"), "int8", workdir / "cache")
    assert quantized.compression["quantized_ops"]["int8"]["Conv"] == 1 and quantized.compression["quantized_ops"]["float"]["GRU"] == 1
    assert "fp32 fallback for {'GRU': 1}" in next(n for n in quantized.notes if n.startswith("int8"))
    assert "left as they are" not in apply_variant(load_model("digits_cnn", workdir / "cache"), "prune:0.5", workdir / "cache").notes[-1]


def test_a_variant_that_changed_nothing_says_so_and_is_never_the_best(workdir):
    """Dynamic int8 leaves convolutions float: of a model of one convolution it quantizes no operator,
    and is the fp32 model under another name. Its note says so plainly, and the best variant is one
    that compressed the model (static int8), the other named as left out."""
    from tvmharness.report.compression import best_variants

    recipe = recipe_from_dict({"name": "unchanged", "models": [f"{USER_MODELS}:one_conv"],
                               "variants": ["int8", "int8:dynamic"], "engines": ["onnxruntime"],
                               "measure": {"repeats": 30, "threads": 2}, "thresholds": {"min_speedup": 0.01},
                               "output": {"dir": str(workdir), "store": str(workdir / "unchanged.db")}})
    result = run_recipe(recipe)
    rows = {r["variant"]: r for r in result.rows}
    dynamic, static = rows["int8:dynamic"], rows["int8"]
    assert dynamic["status"] == OK and dynamic["meets_goals"] is True, dynamic["reason"]
    assert dynamic["details"]["quantized_ops"]["int8"] == {} and dynamic["details"]["same_as_fp32"] is True
    assert ("int8 dynamic: quantized no operator, every one stayed fp32 (this step changed nothing); fp32 fallback for "
            "{'Conv': 1} (ConvInteger is not imported by TVM; int8 static quantizes them)") in dynamic["details"]["notes"]
    assert static["details"]["quantized_ops"]["int8"] == {"Conv": 1} and static["details"]["same_as_fp32"] is False
    frame = result.frame()
    (line,) = best_variants(frame)
    assert line.startswith("best variant of one_conv on x86: int8 on onnxruntime (")
    assert line.endswith("; left out, being the fp32 model under another name: int8:dynamic (int8 quantized no operator)")
    # alone it is no best variant (it was: there is no fp32 row on its engine for it to be no faster than)
    (line,) = best_variants(frame[frame["variant"] != "int8"])
    assert line == ("best variant of one_conv on x86: none that passes the goals compresses it; left out, being the fp32 "
                    "model under another name: int8:dynamic (int8 quantized no operator)")
    # after a step that changed the model, the variant is that model, int8 or not
    pruned = apply_variant(load_model(f"{USER_MODELS}:one_conv", workdir / "cache"), "prune:0.5+int8:dynamic", workdir / "cache")
    assert pruned.compression["quantized_ops"]["int8"] == {} and pruned.compression["same_as_fp32"] is False


def test_a_fine_tune_without_labels_of_the_model_as_given_does_nothing_and_says_how_to_fix_it(digits, workdir):
    """Without labels a fine-tune trains the model to match the fp32 model's outputs, which the model as
    given already does: nothing is learnt, and the note says so and what would train it."""
    import dataclasses

    unlabelled = dataclasses.replace(digits, train_data=dataclasses.replace(digits.train_data, labels=None))
    tuned = apply_variant(unlabelled, "finetune:1", workdir / "cache")
    assert tuned.notes[-1].startswith(f"fine-tune: did nothing: {digits.train_data.source} has no labels, ")
    assert ("for a classifier, give its class ids under 'labels' in the train .npz, or put finetune after a step that "
            "changes the model (prune:0.5+finetune)") in tuned.notes[-1]
    assert tuned.compression["same_as_fp32"] is True and tuned.digest == digits.digest
    assert tuned.torch_module is not digits.torch_module  # a copy: nothing done to it reaches the model given
    # after a step that changed the model, it learns to match fp32's outputs, no labels needed
    recovered = apply_variant(unlabelled, "prune:0.5+finetune:1", workdir / "cache")
    assert "trained 1 epoch(s) to match the fp32 model on " in recovered.notes[-1]
    assert recovered.compression["same_as_fp32"] is False
    # no training data at all: the fix is to give some, with labels
    bare = apply_variant(load_model(f"{USER_MODELS}:tiny_mlp", workdir / "cache"), "finetune:1", workdir / "cache")
    assert bare.notes[-1].startswith("fine-tune: did nothing: tiny_mlp has no training data, ")
    assert "give it training data with labels ([data.tiny_mlp] train, or --train-data)" in bare.notes[-1]


def test_pruning_a_model_that_came_pruned_says_so(workdir):
    model = load_model(f"{USER_MODELS}:already_pruned", workdir / "cache")
    pruned = apply_variant(model, "prune:0.5", workdir / "cache")
    assert ("the model came pruned to 30.8% (torch.nn.utils.prune masks); pruned 50% of conv/linear weights of "
            "those left") in pruned.notes[-1]
    assert pruned.compression["sparsity"] == pytest.approx(0.654, abs=0.001)
    # pruned twice in one chain: the masks are the chain's own, and its note does not say the model came so
    twice = apply_variant(load_model("digits_cnn", workdir / "cache"), "prune:0.5+prune:0.5", workdir / "cache")
    assert "an earlier step pruned it to 50.0%; pruned 50% of conv/linear weights of those left" in twice.notes[-1]
    assert "came pruned" not in " ".join(twice.notes) and twice.compression["sparsity"] == pytest.approx(0.75, abs=0.005)


def test_distillation_trains_a_smaller_student_and_reports_both_trainings(digits, workdir):
    student = apply_variant(digits, "distill:width=4,epochs=4", workdir / "cache")
    figures = student.compression["distillation"]
    assert figures["student_params"] < figures["teacher_params"] / 3
    assert student.compression["params"] == figures["student_params"]
    assert 0.5 < figures["student_accuracy"] <= 1.0 and 0.5 < figures["student_without_teacher_accuracy"] <= 1.0
    assert figures["teacher_accuracy"] > 0.95


def test_distillation_is_the_same_every_time_and_says_when_it_has_nothing_to_score(digits, workdir):
    import dataclasses

    unlabelled = dataclasses.replace(digits, eval_data=dataclasses.replace(digits.eval_data, labels=None))
    student = apply_variant(unlabelled, "distill:width=4,epochs=1", workdir / "cache")
    assert student.compression["distillation"]["student_accuracy"] is None
    assert "no held-out labels to score them on" in student.notes[-1]
    torch.rand(7)  # the student starts from seeded weights, whatever drew from torch's random state before it
    again = apply_variant(unlabelled, "distill:width=4,epochs=1", workdir / "cache")
    assert all(torch.equal(a, b) for a, b in zip(student.torch_module.state_dict().values(),
                                                 again.torch_module.state_dict().values()))


def test_int8_static_stores_int8_weights_that_tvm_imports(digits, workdir):
    import onnx
    from onnx import TensorProto

    from tvmharness.frontend import to_relax

    quantized = apply_variant(digits, "int8:calibration=entropy,samples=16", workdir / "cache")
    assert quantized.torch_module is None and quantized.onnx_path.is_file()
    graph = onnx.load(str(quantized.onnx_path)).graph
    int8_weights = [t for t in graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) > 1]
    assert len(int8_weights) == 4  # two convs and two linear layers
    scales = {t.name: t.dims for t in graph.initializer if t.name.endswith("scale")}
    assert any(dims and dims[0] > 1 for dims in scales.values())  # per-channel weight scales
    assert quantized.compression["quantized_ops"]["int8"].get("Conv") == 2
    # TVM runs the convs and matmuls as integer kernels (uint8 x int8 -> int32), not dequantize -> fp32
    assert quantized.compression["tvm_int8_kernels"]["integer"] == {"conv2d": 2, "matmul": 2}
    assert quantized.compression["tvm_int8_kernels"]["float_fallback"] == {}
    script = to_relax(quantized, "onnx", workdir / "cache").script(show_meta=False)
    assert script.count('out_dtype="int32"') == 4
    assert not any("R.dequantize(metadata" in line and "axis=0" in line and ", 3, 3)" in line for line in script.splitlines())


def test_int8_runs_1d_convolutions_on_integer_kernels_and_names_what_stays_fp32(workdir):
    """Audio models are 1-D convolutions: TVM runs them as integer kernels as it does 2-D ones, agreeing
    with ONNX Runtime's int8; a transposed convolution has no integer kernel here, and the notes say so."""
    from tvmharness.engines import EngineOptions, get_engine
    from tvmharness.targets import resolve

    model = load_model(f"{USER_MODELS}:keyword_spotter", workdir / "cache")
    quantized = apply_variant(model, "int8", workdir / "cache")
    kernels = quantized.compression["tvm_int8_kernels"]
    assert kernels["integer"] == {"conv1d": 3, "matmul": 1}
    assert kernels["float_fallback"] == {"conv1d_transpose: no integer kernel for conv1d_transpose (only for conv1d, "
                                         "conv2d, matmul)": 1}
    assert "1 conv1d_transpose: no integer kernel" in " ".join(quantized.notes)
    options = EngineOptions(cache_dir=workdir / "cache", threads=2)
    tvm_int8, ort_int8 = (get_engine(e).prepare(quantized, resolve("x86", 2), options) for e in ("tvm", "onnxruntime"))
    floors = quantized.compression["tolerance_floors"]
    for feed in model.samples(4):
        for k, (ours, theirs) in enumerate(zip(tvm_int8.run(feed), ort_int8.run(feed))):
            assert np.abs(ours - theirs).max() <= max(floors[k], INT8_TOLERANCE * np.abs(theirs).max())


def test_int8_records_the_calibration_it_ran_beside_what_was_asked(digits, workdir):
    import dataclasses

    from tvmharness.data import data_set

    few = data_set("train40.npz", (np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32),), None)
    quantized = apply_variant(dataclasses.replace(digits, train_data=few), "int8", workdir / "cache")
    assert quantized.compression["compression"][0]["samples"] == 64  # asked
    assert quantized.compression["calibration"] == {"calls": 40, "content_hash": few.digest[:16]}  # ran
    assert any("calibration on 40 calls of train40.npz (all it has: 64 were asked for)" in n for n in quantized.notes)


def test_int8_calibrates_on_calls_from_across_a_sorted_data_set(digits):
    """A training file sorted by class must not calibrate on its first class alone."""
    import dataclasses

    from tvmharness.compress.quantize import Int8
    from tvmharness.data import data_set

    ordered = np.repeat(np.arange(100, dtype=np.float32), 64).reshape(100, 1, 8, 8)  # sample k is all k
    model = dataclasses.replace(digits, train_data=data_set("sorted.npz", (ordered,), np.arange(100) // 10))
    feeds, source = Int8(samples=8).calibration_data(model)
    picked = [float(feed[0][0, 0, 0, 0]) for feed in feeds]
    assert len(set(picked)) == 8 and max(picked) - min(picked) > 50 and "picked at random from its 100" in source
    assert Int8(samples=8).calibration_data(model)[0][0][0].tobytes() == feeds[0][0].tobytes()  # the same picks each time


def test_an_int8_model_tvm_cannot_import_is_still_onnx_runtimes_to_run(digits, workdir, monkeypatch):
    """TVM's importer failing on the quantized graph costs TVM's rows (they say why), not the variant."""
    import tvmharness.qdq as qdq

    def importer_fails(*_):
        raise RuntimeError("no converter for QLinearFoo")

    monkeypatch.setattr(qdq, "integer_kernels", importer_fails)
    quantized = apply_variant(digits, "int8:samples=8", workdir / "cache")
    assert quantized.onnx_path.is_file() and "tvm_int8_kernels" not in quantized.compression
    assert "its ONNX importer could not read the int8 model (no converter for QLinearFoo)" in quantized.notes[-1]


def test_the_integer_rewrite_computes_what_the_qdq_graph_does(digits, workdir):
    """Against ONNX Runtime's own int8 run of the same file, on the held-out set, with a non-zero
    activation zero point (int8 activations) to exercise the zero-point correction and padding."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from tvmharness.frontend import to_relax

    quantized = apply_variant(digits, "int8:activations=int8,samples=16", workdir / "cache")
    mod = to_relax(quantized, "onnx", workdir / "cache")
    assert 'out_dtype="int32"' in mod.script(show_meta=False)
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    session = ort.InferenceSession(str(quantized.onnx_path), providers=["CPUExecutionProvider"])
    x = digits.eval_data.arrays[0][:64]
    ours = np.concatenate([vm["main"](tvm.runtime.tensor(x[i : i + 1])).numpy() for i in range(len(x))])
    theirs = np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    assert np.mean(ours.argmax(1) == theirs.argmax(1)) >= 0.98
    assert np.max(np.abs(ours - theirs)) <= 0.02 * np.max(np.abs(theirs))


def test_fp16_halves_the_weights(digits, workdir):
    half = apply_variant(digits, "fp16", workdir / "cache")
    assert {p.dtype for p in half.torch_module.parameters()} == {torch.float16}
    assert outputs(half.torch_module, digits).dtype == torch.float32


def test_a_chain_applies_in_order_and_round_trips_to_json(digits, workdir):
    variant = parse_variant(["prune:0.5", "finetune:1", "int8:samples=8"])
    assert [s.kind for s in variant.steps] == ["prune", "finetune", "int8"]
    assert variant.name == "prune:0.5+finetune:1+int8:samples=8"
    assert parse_variant(variant.name) == variant
    assert Variant.model_validate_json(variant.model_dump_json()) == variant
    result = apply_variant(digits, variant, workdir / "cache")
    assert result.compression["sparsity"] == pytest.approx(0.5, abs=0.005)  # pruned before it was quantized
    assert [c["kind"] for c in result.compression["compression"]] == ["prune", "finetune", "int8"]
    assert [c["version"] for c in result.compression["compression"]] == [1, 3, 2]
    for kind, cls in REGISTRY.items():
        assert cls.model_fields["version"].default >= 1, kind


@pytest.mark.parametrize("spec, needle", [
    ("prune:1.0", "amount"),
    ("prune:0.5,foo=1", "no parameter 'foo'"),
    ("prune:amount=0.5,amount=0.3", "'amount' is given twice"),
    ("lowrank:rank=0", "rank"),
    ("lowrank", "exactly one of rank=N or energy=F"),
    ("sparsify:0.5", "unknown compression technique 'sparsify'"),
    ("int8:samples=0", "samples"),
    (["int8", "prune:0.5"], "must be the last step"),
    (["fp32", "int8"], "not a step"),
    ("int8:dynamic,calibration=entropy", "'calibration' applies only with mode=static"),  # it would change nothing
    ("prune:0.5,steps=5", "'steps' applies only with schedule=gradual"),
    ("prune:0.5+", "has an empty step"),  # not prune:0.5 alone: a step may have been lost
    ("finetune:1,lr=inf", "finite number"),  # it would train the weights to NaN
    ("", "an empty variant"),
])
def test_bad_variants_fail_with_a_clear_message(spec, needle):
    with pytest.raises(HarnessError) as err:
        parse_variant(spec)
    assert needle in str(err.value) and err.value.fix


def test_variant_rows_are_measured_stored_and_judged(workdir):
    from rich.console import Console

    from tvmharness.report.terminal import render_run

    recipe = recipe_from_dict({
        "name": "compress", "models": ["digits_cnn", f"{USER_MODELS}:tiny_mlp"],
        "variants": ["fp32", ["prune:0.5", "finetune:2"], "int8:samples=16", "distill:epochs=2"],
        "engines": ["tvm", "torch", "onnxruntime"],
        "measure": {"warmup": 1, "repeats": 30, "threads": 2},
        "thresholds": {"max_accuracy_drop": 0.02, "max_size_ratio": 0.5},
        "output": {"dir": str(workdir), "store": str(workdir / "compress.db")},
    })
    result = run_recipe(recipe)
    rows = {(r["model"], r["variant"], r["engine"]): r for r in result.rows}
    pruned = rows[("digits_cnn", "prune:0.5+finetune:2", "tvm")]
    assert pruned["status"] == OK, pruned["reason"]
    assert pruned["details"]["sparsity"] == pytest.approx(0.5, abs=0.005)
    assert pruned["details"]["compression"][0] == {"kind": "prune", "version": 1, "amount": 0.5, "scope": "layer",
                                                   "schedule": "oneshot", "steps": 3, "epochs": 1, "lr": 0.001}
    assert pruned["meets_goals"] is False and any("size" in m for m in pruned["details"]["goal_misses"])
    int8_ort = rows[("digits_cnn", "int8:samples=16", "onnxruntime")]
    assert int8_ort["status"] == OK and int8_ort["details"]["size_ratio"] < 0.5
    assert int8_ort["meets_goals"] is (int8_ort["details"]["accuracy_drop"] <= 0.02)
    assert rows[("digits_cnn", "int8:samples=16", "tvm")]["status"] == OK  # agrees with ONNX Runtime's int8
    int8_torch = rows[("digits_cnn", "int8:samples=16", "torch")]
    assert int8_torch["status"] == NOT_APPLICABLE and "variant int8:samples=16 is one" in int8_torch["reason"]
    assert rows[("tiny_mlp", "distill:epochs=2", "—")]["status"] == NOT_APPLICABLE
    assert rows[("tiny_mlp", "prune:0.5+finetune:2", "tvm")]["status"] == OK  # data-free fine-tune on noise
    assert not [r for r in result.failed], [(r["variant"], r["engine"], r["reason"]) for r in result.failed]
    # A variant's speed-up over fp32 on its engine comes from the two timed in turns, not from their rows' windows.
    for engine in ("tvm", "torch", "onnxruntime"):
        turns = int8_ort["details"]["fp32_in_turns"] if engine == "onnxruntime" else \
            rows[("digits_cnn", "prune:0.5+finetune:2", engine)]["details"]["fp32_in_turns"]
        assert len(turns["samples_ms"]) == len(turns["fp32_samples_ms"]) == 30
        assert turns["median_ms"] == pytest.approx(float(np.median(turns["samples_ms"])))
    assert int8_ort["details"]["speedup_vs_fp32"] == pytest.approx(
        int8_ort["details"]["fp32_in_turns"]["fp32_median_ms"] / int8_ort["details"]["fp32_in_turns"]["median_ms"])
    assert "fp32_in_turns" not in rows[("digits_cnn", "fp32", "tvm")]["details"]  # fp32 itself: nothing to pair with

    stored = result.frame()
    row = stored[(stored["variant"] == "prune:0.5+finetune:2") & (stored["engine"] == "tvm")
                 & (stored["model"] == "digits_cnn")].iloc[0]
    for key in ("params", "flops", "sparsity", "compressed_bytes", "compression"):
        assert key in row["details"]
    assert row["meets_goals"] == False  # noqa: E712 (a numpy bool from the store)

    console = Console(record=True, width=250)
    render_run(stored, result.store.run(result.run_id), console)
    text = console.export_text()
    assert "best variant of digits_cnn on x86: " in text and "compression: each variant" in text
    best = text.split("best variant of digits_cnn on x86: ")[1].splitlines()[0]
    passing = {r["variant"] for r in result.rows if r["model"] == "digits_cnn" and r.get("meets_goals") is True}
    assert best.split(" on ")[0] in passing


def test_a_bad_variant_in_a_recipe_is_one_clear_message(tmp_path):
    from tests.conftest import run_cli

    recipe = tmp_path / "bad.toml"
    recipe.write_text('models = ["digits_cnn"]\nvariants = ["fp32", ["prune:1.5", "int8"]]\n')
    proc = run_cli("run", str(recipe), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "bad parameters in variant 'prune:1.5'" in proc.stderr and "amount" in proc.stderr
    assert not (tmp_path / "results" / "history.db").exists()  # nothing ran


def test_an_onnx_file_is_quantized_to_int8_as_it_is(digits, workdir):
    """Many edge models arrive as ONNX: ONNX Runtime's quantizer takes the file itself; TVM runs the
    result on integer kernels and agrees with ONNX Runtime's int8. Techniques that need PyTorch say so."""
    import shutil

    from tvmharness.export import onnx_file

    path = workdir / "digits_file.onnx"
    shutil.copy(onnx_file(digits, workdir / "cache")[0], path)
    recipe = recipe_from_dict({"name": "onnx-int8", "models": [str(path)], "variants": ["fp32", "int8", "prune:0.5"],
                               "engines": ["tvm", "onnxruntime"], "measure": {"repeats": 30, "threads": 2},
                               "output": {"dir": str(workdir), "store": str(workdir / "onnx-int8.db")}})
    rows = {(r["variant"], r["engine"]): r for r in run_recipe(recipe).rows}
    for engine in ("tvm", "onnxruntime"):
        row = rows[("int8", engine)]
        assert row["status"] == OK, row["reason"]
        assert row["details"]["quantized_ops"]["int8"]["Conv"] >= 2, row["details"]["quantized_ops"]
    assert rows[("int8", "tvm")]["details"]["tvm_int8_kernels"]["integer"]["conv2d"] >= 2
    assert rows[("int8", "tvm")]["details"]["top1_disagreement"] < 0.05  # no labels: top-1 agreement with the fp32 file
    pruned = rows[("prune:0.5", "—")]
    assert pruned["status"] == NOT_APPLICABLE and "only int8" in pruned["reason"]


def test_a_variant_s_size_is_against_fp32_on_its_own_engine_alone():
    """What an engine ships against what it shipped for fp32: a clustered model's indexed size is no
    engine's artifact, and another engine's fp32 row is another format."""
    from tvmharness.pipeline import _compare_with_baseline

    recipe = recipe_from_dict({"models": ["digits_cnn"], "thresholds": {"max_size_ratio": 0.5}})
    baseline = {"median_ms": 1.0, "artifact_bytes": 20_000, "accuracy": 0.9}  # PyTorch's state dict
    fp32_tvm = {"median_ms": 0.5, "artifact_bytes": 190_000}

    def row(**details):
        return {"status": OK, "median_ms": 0.5, "artifact_bytes": 189_000, "accuracy": 0.9, "details": details}

    clustered = row(compressed_bytes=1_400)
    _compare_with_baseline(clustered, baseline, recipe, fp32_tvm)
    assert clustered["details"]["size_ratio"] == pytest.approx(189_000 / 190_000) and clustered["meets_goals"] is False
    fp32_itself = row()  # fp32 against itself: no size figure, and no size goal to miss
    _compare_with_baseline(fp32_itself, baseline, recipe, fp32_itself)
    assert "size_ratio" not in fp32_itself["details"] and fp32_itself["meets_goals"] is True
    orphan = row()  # its engine's fp32 row failed: no size figure, not one against PyTorch's weights
    _compare_with_baseline(orphan, baseline, recipe, None)
    assert "size_ratio" not in orphan["details"]


@pytest.mark.parametrize("variant, fix", [("prune:0.5", "give the model as path/to/file.py:function to compress it with prune"),
                                          ("fp16", "give the model as a .pt2 or path/to/file.py:function")])
def test_an_onnx_file_names_the_form_each_technique_takes(variant, fix):
    from types import SimpleNamespace

    from tvmharness.compress.base import NotApplicable

    with pytest.raises(NotApplicable) as caught:
        apply_variant(SimpleNamespace(name="m", torch_module=None), variant)
    assert caught.value.fix.startswith(fix) and (".pt2" not in caught.value.fix) == variant.startswith("prune")


def test_compressing_a_pt2_shows_no_warning_of_torch_s_own(tmp_path):
    import warnings

    path = tmp_path / "mlp.pt2"
    mlp = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    torch.export.save(torch.export.export(mlp, (torch.randn(1, 16),)), str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_variant(load_model(str(path), tmp_path / "cache"), "fp16", tmp_path / "cache")
    assert not [w for w in caught if "LeafSpec" in str(w.message)]


@pytest.fixture(scope="module")
def quantized_files(tmp_path_factory) -> dict:
    """A conv + linear model as users quantize it themselves with ONNX Runtime's tools, one file per way."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    folder = tmp_path_factory.mktemp("quantized")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    fp32 = folder / "fp32.onnx"
    torch.onnx.export(net, (torch.randn(1, 1, 8, 8),), str(fp32), input_names=["x"], dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"x": np.random.default_rng(k).standard_normal((1, 1, 8, 8), dtype=np.float32)} for k in range(4))

        def get_next(self):
            return next(self.items, None)

    files = {name: folder / f"{name}.onnx" for name in ("qdq", "qdq_uint8_weights", "qoperator", "dynamic")}
    quantize_static(str(fp32), str(files["qdq"]), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    quantize_static(str(fp32), str(files["qdq_uint8_weights"]), Reader(), quant_format=QuantFormat.QDQ,
                    weight_type=QuantType.QUInt8, activation_type=QuantType.QUInt8)
    quantize_static(str(fp32), str(files["qoperator"]), Reader(), quant_format=QuantFormat.QOperator)
    quantize_dynamic(str(fp32), str(files["dynamic"]))  # convs too: ConvInteger
    return files


@pytest.mark.parametrize("name, ops", [("qoperator", "QGemm, QLinearConv"), ("dynamic", "ConvInteger")])
def test_a_file_quantized_in_a_form_tvm_cannot_import_says_how_to_quantize_it(quantized_files, workdir, name, ops):
    from tvmharness.frontend import to_relax

    model = load_model(str(quantized_files[name]), workdir / "cache")
    with pytest.raises(HarnessError) as caught:
        to_relax(model, "onnx", workdir / "cache")
    assert f"quantized with operators TVM's Relax onnx frontend does not import: {ops}" in caught.value.cause
    assert "quant_format=QuantFormat.QDQ" in caught.value.fix and 'op_types_to_quantize=["MatMul", "Gemm"]' in caught.value.fix
    assert "--variant int8" in caught.value.fix and "replace" not in caught.value.fix


@pytest.mark.parametrize("name, found", [("qdq", "QuantizeLinear"), ("qoperator", "1 QLinearConv"),
                                         ("dynamic", "1 ConvInteger")])
@pytest.mark.parametrize("variant", ["int8", "int8:dynamic"])
def test_int8_of_a_file_already_quantized_does_not_apply(quantized_files, workdir, name, found, variant):
    """Quantized again, ORT's static quantizer wrote an invalid graph (two nodes of one name) and its
    dynamic one changed nothing: the file is measured as it is, by its fp32 row."""
    from tvmharness.compress.base import NotApplicable

    model = load_model(str(quantized_files[name]), workdir / "cache")
    with pytest.raises(NotApplicable) as caught:
        apply_variant(model, variant, workdir / "cache")
    assert "is already quantized" in caught.value.cause and found in caught.value.cause
    assert "its fp32 row is the quantized model" in caught.value.fix


def test_a_user_s_qdq_file_says_which_layers_run_integer_kernels_on_tvm(quantized_files, workdir):
    """As the harness's own int8 variant does: uint8 weights (QuantType.QUInt8) fall back to dequantize -> fp32."""
    notes = load_model(str(quantized_files["qdq"]), workdir / "cache").notes
    assert "on TVM: integer kernels (uint8 x int8 -> int32, one float rescale) for 1 conv2d, 1 matmul" in notes
    fallback = load_model(str(quantized_files["qdq_uint8_weights"]), workdir / "cache").notes[-1]
    assert "for none; dequantize -> fp32 fallback for 1 conv2d: weight is not an int8 constant" in fallback


def test_a_user_s_qdq_file_is_measured_as_it_is_and_claims_no_cache(quantized_files, workdir):
    """Its rows and artifact carry the integer-kernel note; ONNX Runtime runs the user's own file, which
    is no cached build; int8 of it is not applicable."""
    import json
    from pathlib import Path

    recipe = recipe_from_dict({"name": "user-qdq", "models": [str(quantized_files["qdq_uint8_weights"])],
                               "variants": ["fp32", "int8"], "engines": ["tvm", "onnxruntime"],
                               "measure": {"repeats": 30, "threads": 2},
                               "output": {"dir": str(workdir), "store": str(workdir / "user-qdq.db")}})
    rows = {(r["variant"], r["engine"]): r for r in run_recipe(recipe).rows}
    ort_row, tvm_row = rows[("fp32", "onnxruntime")], rows[("fp32", "tvm")]
    assert ort_row["status"] == OK and tvm_row["status"] == OK, (ort_row["reason"], tvm_row["reason"])
    assert ort_row["cache_hit"] is None and tvm_row["cache_hit"] is False
    for row in (ort_row, tvm_row):
        assert any("dequantize -> fp32 fallback" in n for n in row["details"]["notes"])
    manifest = json.loads((Path(tvm_row["details"]["artifact"]).parent / "manifest.json").read_text())
    assert any("dequantize -> fp32 fallback" in n for n in manifest["notes"])
    assert rows[("int8", "—")]["status"] == NOT_APPLICABLE and "already quantized" in rows[("int8", "—")]["reason"]


def test_a_file_that_came_quantized_or_in_fp16_is_judged_by_that_precision_s_tolerance(quantized_files, tmp_path, workdir):
    """Its engines round differently, as the int8 and fp16 variants' do: a difference of one output
    step between ONNX Runtime and TVM is agreement, not a model that "disagrees"; an fp32 file's is not."""
    import onnx

    from tvmharness.compress import baseline_metrics
    from tvmharness.pipeline import output_agreement

    half = onnx.load(str(quantized_files["qdq"].with_name("fp32.onnx")))
    for tensor in half.graph.initializer:  # weights stored in fp16, as a converted file holds them
        tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    onnx.save(half, str(tmp_path / "half.onnx"))
    reference = [[np.array([[0.50, -0.25, 1.00]], dtype=np.float32)]]
    nudged = [[reference[0][0] + np.float32(0.006)]]  # 0.6% of the largest output: int8's one step, fp16's rounding
    for name, path, tolerance in (("qdq", quantized_files["qdq"], 0.02), ("half", tmp_path / "half.onnx", 0.01),
                                  ("fp32", quantized_files["qdq"].with_name("fp32.onnx"), None)):
        model = load_model(str(path), workdir / "cache")
        model.compression = baseline_metrics(model)
        assert model.compression.get("tolerance") == tolerance, name
        _, why = output_agreement(model, reference, nudged, 1e-3)
        assert (why is None) == (tolerance is not None), (name, why)
