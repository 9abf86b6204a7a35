"""The seed prototype's model as an FP16 OpenVINO IR, for side-by-side benchmarks.

    python -m trainer.seed_model OUT.xml

UNet with an EfficientNet-B1 encoder and segmentation_models_pytorch's default decoder
(256-128-64-32-16), untrained (only its speed matters), exported like dustspot's models.
"""
import sys


def main(out_xml: str) -> None:
    import openvino as ov
    import torch

    from trainer.model import DustNet, Probabilities
    net = Probabilities(DustNet(decoder_channels=(256, 128, 64, 32, 16))).eval()
    model = ov.convert_model(net, example_input=torch.rand(1, 3, 224, 224), input=[(-1, 3, -1, -1)])
    ov.save_model(model, out_xml, compress_to_fp16=True)
    print(out_xml)


if __name__ == "__main__":
    main(sys.argv[1])
