"""INT8 post-training quantization (NNCF), checked against the FP16 model before publishing.

NNCF's PTQ needs only unlabelled calibration inputs: tiles from the run's training pool
(at least 300, as the issue asks; NNCF's own default subset is 300 samples). The INT8
model is then scored beside the FP16 one on the held-out synthetic pool; when its object
recall drops by more than MAX_RECALL_DROP it is not published.
"""
import numpy as np

CALIBRATION_TILES = 300
MAX_RECALL_DROP = 0.01
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
                              preset=nncf.QuantizationPreset.MIXED)
    ov.save_model(quantized, out_xml, compress_to_fp16=False)
    return out_xml


def compare(fp16_xml: str, int8_xml: str, images: np.ndarray, masks: np.ndarray, threshold: float) -> dict:
    """Object recall/precision of both models on held-out tiles, and the INT8 - FP16 change."""
    from .validate import object_scores
    result = {}
    for name, xml in (("fp16", fp16_xml), ("int8", int8_xml)):
        recall, precision = object_scores(predict(xml, images), masks, threshold)
        result[name] = {"object_recall": recall, "object_precision": precision}
    result["recall_drop"] = result["fp16"]["object_recall"] - result["int8"]["object_recall"]
    result["precision_drop"] = result["fp16"]["object_precision"] - result["int8"]["object_precision"]
    result["threshold"] = threshold
    return result
