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


def _unet_fullres(encoder, decoder_channels):
    import segmentation_models_pytorch as smp

    class UnetFullRes(smp.Unet):
        """smp's Unet plus a detail branch at full resolution, added to its logits.

        smp's Unet has no stride-1 skip: its first look at the image is a stride-2 stem, where a
        2-px speck in foliage is already averaged with its surroundings (session 6: the same
        network on 2x-upscaled busy tiles found 19 % instead of 7 % of dust at 1-2x the local
        contrast). The branch sees the input at stride 1; its last layer starts at zero, so a
        network warm-started from a plain Unet begins exactly where that Unet was."""

        def __init__(self, **kw):
            super().__init__(**kw)
            width = DETAIL_CHANNELS
            self.detail = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            self.fuse = nn.Sequential(
                nn.Conv2d(width + decoder_channels[-1], width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1))
            nn.init.zeros_(self.fuse[-1].weight)
            nn.init.zeros_(self.fuse[-1].bias)

        def forward(self, x):
            decoded = self.decoder(self.encoder(x))
            return (self.segmentation_head(decoded)
                    + self.fuse(torch.cat([decoded, self.detail(x)], dim=1)))

    return UnetFullRes(encoder_name=encoder, encoder_weights=None, encoder_depth=len(decoder_channels),
                       decoder_channels=tuple(decoder_channels), in_channels=3, classes=1, activation=None)


DETAIL_CHANNELS = 12        # width of unet-fullres's stride-1 branch (~0.38 GFLOP per 224 tile)

# "extends": a network of that architecture (same encoder and decoder) warm-starts this one;
# the parameters it lacks start fresh.
ARCHITECTURES = {
    "unet": {"family": "smp.Unet", "build": _smp("Unet")},
    "unetplusplus": {"family": "smp.UnetPlusPlus", "build": _smp("UnetPlusPlus")},
    "unet-fullres": {"family": "smp.Unet + full-resolution detail branch", "build": _unet_fullres,
                     "extends": "unet"},
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
    net = DustNet(spec.get("arch", DEFAULT_ARCH), spec.get("encoder", DEFAULT_ENCODER),
                  tuple(spec.get("decoder_channels", DEFAULT_DECODER)))
    if spec.get("channels"):                    # a pruned network (trainer.prune)
        from .prune import reshape
        reshape(net, spec["channels"])
        net.spec = {**net.spec, "channels": spec["channels"]}
    return net


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
