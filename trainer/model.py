"""Networks built by name: a new architecture or encoder is one registry entry, not a code path."""
import torch
from torch import nn

from . import settings

# Input normalisation lives inside the network (DustNet), so the exported graph takes
# plain BGR in [0, 1] and no caller has to know what the model was trained with.
MEAN = 0.45
STD = 0.25
DEFAULT_ARCH = settings.ARCH
DEFAULT_ENCODER = settings.ENCODER
DEFAULT_DECODER = settings.DECODER_CHANNELS
MULTIPLE_OF = 32            # five stride-2 stages


def _smp(cls_name):
    def build(encoder, decoder_channels):
        import segmentation_models_pytorch as smp
        cls = getattr(smp, cls_name)
        return cls(encoder_name=encoder, encoder_weights=None,   # no internet: never pretrained
                   encoder_depth=len(decoder_channels), decoder_channels=tuple(decoder_channels),
                   in_channels=3, classes=1, activation=None)
    return build


ARCHITECTURES = {
    "unet": {"family": "smp.Unet", "build": _smp("Unet")},
    "unetplusplus": {"family": "smp.UnetPlusPlus", "build": _smp("UnetPlusPlus")},
}


class DustNet(nn.Module):
    """BGR [0, 1] in, dust logits out."""

    def __init__(self, arch=DEFAULT_ARCH, encoder=DEFAULT_ENCODER, decoder_channels=DEFAULT_DECODER):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
        self.spec = {"arch": arch, "encoder": encoder, "decoder_channels": list(decoder_channels)}
        self.net = ARCHITECTURES[arch]["build"](encoder, decoder_channels)

    def forward(self, x):
        return self.net((x - MEAN) / STD)


class Probabilities(nn.Module):
    """What gets exported: sigmoid probabilities [N, 1, H, W]."""

    def __init__(self, net: DustNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.sigmoid(self.net(x))


def build(spec: dict) -> DustNet:
    return DustNet(spec.get("arch", DEFAULT_ARCH), spec.get("encoder", DEFAULT_ENCODER),
                   tuple(spec.get("decoder_channels", DEFAULT_DECODER)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
