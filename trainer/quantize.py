"""INT8 post-training quantization (NNCF), checked against the FP16 model before publishing.

NNCF's PTQ needs only unlabelled calibration inputs: tiles from the run's training pool
(at least 300, as the issue asks; NNCF's own default subset is 300 samples). The INT8
model is then scored beside the FP16 one (held-out frames through the real pipeline when the
export has them, else the held-out synthetic tile pool); when its object recall or object
precision drops by more than MAX_DROP it is not published.

The stem convolutions (they see raw pixels, where faint dust is a few levels) and the
head convolutions (their output is the probability the threshold cuts) stay in floating point:
the usual first/last-layer exception of post-training quantization.
"""
import numpy as np

CALIBRATION_TILES = 300
METHOD = ("NNCF post-training quantization, preset MIXED, bias correction (not the fast variant), "
          "stem and head convolutions kept in floating point")
MAX_DROP = 0.01             # object recall and object precision, each
BATCH = 8


def _as_input(tiles: np.ndarray) -> np.ndarray:
    """uint8 NHWC BGR tiles -> float32 NCHW in [0, 1] (the model contract)."""
    return np.ascontiguousarray(tiles.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def predict(xml_path: str, images: np.ndarray) -> np.ndarray:
    """Probabilities [N, H, W] from an IR, f32 inference (so the comparison is about weights)."""
    import openvino as ov
    compiled = ov.Core().compile_model(xml_path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = [compiled(_as_input(np.asarray(images[i:i + BATCH])))[0][:, 0] for i in range(0, len(images), BATCH)]
    return np.concatenate(out)


def quantize(fp16_xml: str, calibration: np.ndarray, out_xml: str) -> str:
    import nncf
    import openvino as ov
    model = ov.Core().read_model(fp16_xml)
    items = [_as_input(np.asarray(calibration[i:i + 1])) for i in range(len(calibration))]
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                              preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=nncf.IgnoredScope(names=stem_and_head(model)),
                              # the full bias correction: with the fast one 0.4.1's object precision
                              # on the held-out frames dropped 1.4 points (refused), with this 0.1
                              fast_bias_correction=False)
    ov.save_model(quantized, out_xml, compress_to_fp16=False)
    return out_xml


# ops a pixel value passes through unchanged in kind: normalisation, bias, precision casts,
# the sum + sigmoid that turn head outputs into the probability, and unet-chroma's stacking of
# the pixels with their colour cues
_PASS_THROUGH = {"Add", "Subtract", "Multiply", "Divide", "Convert", "Sigmoid", "Concat"}


def stem_and_head(model) -> list[str]:
    """Names of the convolutions that see the input pixels (the encoder's stem; unet-fullres's
    detail branch too) and of those whose output is the probability (the segmentation head;
    unet-fullres's fuse layer too): between them and the model's input or output lie only
    element-wise ops."""
    def reaches_input(node):
        if node.get_type_name() == "Parameter":
            return True
        return node.get_type_name() in _PASS_THROUGH and any(
            reaches_input(v.get_node()) for v in node.input_values() if v.get_node().get_type_name() != "Constant")

    def reaches_output(node):
        targets = [t.get_node() for out in node.outputs() for t in out.get_target_inputs()]
        return any(t.get_type_name() == "Result"
                   or (t.get_type_name() in _PASS_THROUGH and reaches_output(t)) for t in targets)

    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    if not convs:
        return []
    stems = [op for op in convs if reaches_input(op.input_value(0).get_node())] or convs[:1]
    heads = [op for op in convs if reaches_output(op)] or convs[-1:]
    return list(dict.fromkeys(op.get_friendly_name() for op in stems + heads))


def drops(fp16: dict, int8: dict) -> dict:
    return {"recall_drop": fp16["object_recall"] - int8["object_recall"],
            "precision_drop": fp16["object_precision"] - int8["object_precision"]}


def refusal(check: dict) -> str | None:
    """Why an INT8 model must not be published, or None."""
    for key in ("recall_drop", "precision_drop"):
        if check[key] > MAX_DROP:
            return f"object {key.split('_')[0]} drops by {check[key]:.3f} (> {MAX_DROP})"
    return None


def compare(fp16_xml: str, int8_xml: str, images: np.ndarray, masks: np.ndarray, threshold: float) -> dict:
    """Object recall/precision of both models on held-out tiles, and the INT8 - FP16 change."""
    from .validate import object_scores
    result = {}
    for name, xml in (("fp16", fp16_xml), ("int8", int8_xml)):
        recall, precision = object_scores(predict(xml, images), masks, threshold)
        result[name] = {"object_recall": recall, "object_precision": precision}
    result.update(drops(result["fp16"], result["int8"]), threshold=threshold, on="held-out synthetic tiles")
    return result
