"""An exported ONNX graph rewritten into onnxruntime's fused transformer operators, so that int8 quantisation reaches
the attention's projections too.

onnxscript's ORT fusions turn the traced attention, layer norms and GELUs into onnxruntime's `Attention`,
`SkipLayerNormalization` and `BiasGelu`. Two edits then let onnxruntime's quantiser make each `Attention` a
`QAttention` (int8 query, key and value projections in one kernel): the padding mask is given as the raw 2-D
attention mask (`mask_index`), which QAttention reads, instead of the additive bias the tracer built from it, which
QAttention has no input for; and `qkv_hidden_sizes`, which QAttention refuses, is dropped where the three sizes are
equal, its default. The mask edit holds for a padding mask only; `export_encoder` checks the fused graph against
the torch model and keeps the plain graph when they differ.
"""

from pathlib import Path

ATTENTION_MASK = "attention_mask"
# The Attention operator's inputs: (input, weights, bias, mask_index, past, attention_bias, ...).
MASK_INDEX, ATTENTION_BIAS = 3, 5
# Constant folding must reach the packed query-key-value weights (hidden x 3 hidden), beyond onnxscript's default.
FOLDING_LIMIT = 1 << 26


def fuse_for_onnxruntime(source: Path, target: Path) -> int:
    """Write `source` fused to `target`; returns how many attention blocks were fused."""
    import onnx_ir as ir
    import onnxscript
    from onnx_ir.passes.common import RemoveUnusedNodesPass
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _ = optimize_for_ort(ir.load(source))
    onnxscript.optimizer.optimize(model, input_size_limit=FOLDING_LIMIT, output_size_limit=FOLDING_LIMIT)
    attentions = [node for node in model.graph if node.op_type == "Attention" and node.domain == "com.microsoft"]
    if attentions:
        raw_mask = _int32_mask(model)
        for node in attentions:
            _read_the_raw_mask(node, raw_mask)
    RemoveUnusedNodesPass()(model)
    ir.save(model, target)
    return len(attentions)


def _int32_mask(model):
    import onnx_ir as ir

    mask = next(value for value in model.graph.inputs if value.name == ATTENTION_MASK)
    cast = ir.node("Cast", inputs=[mask], attributes={"to": ir.DataType.INT32}, name="attention_mask_int32")
    cast.outputs[0].name = "attention_mask_int32"
    model.graph.insert_before(model.graph.node(0), cast)
    return cast.outputs[0]


def _read_the_raw_mask(node, raw_mask) -> None:
    inputs = list(node.inputs) + [None] * (ATTENTION_BIAS + 1 - len(node.inputs))
    if inputs[MASK_INDEX] is None and inputs[ATTENTION_BIAS] is not None:
        inputs[MASK_INDEX], inputs[ATTENTION_BIAS] = raw_mask, None
        while inputs and inputs[-1] is None:
            inputs.pop()
        node.resize_inputs(len(inputs))
        for index, value in enumerate(inputs):
            node.replace_input_with(index, value)
    sizes = node.attributes.get("qkv_hidden_sizes")
    if sizes is not None and len(set(sizes.as_ints())) == 1:
        del node.attributes["qkv_hidden_sizes"]
