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


def colour_cues(bgr):
    """Per-pixel colour and darkness cues of a BGR [0, 1] batch [N, 3, H, W] -> [N, 3, H, W]:
    chroma per luma of the 5x5 patch, how much of its 25x25 surroundings' chroma the patch lacks,
    and how much darker than them it is (relative).  A ratio a ReLU network builds poorly from
    the pixels, and the one local cue that tells realdust-dev's forest dust from the forest's own
    shadows: dust darkens towards a grey, a shadow keeps its colour (`python -m
    trainer.cue_probe`, session 19: AUC 0.90 against 0.63 for 0.4.1's own probability)."""
    def box(img, size):     # separable, and exact at the borders (count_include_pad=False)
        img = nn.functional.avg_pool2d(img, (1, size), 1, (0, size // 2), count_include_pad=False)
        return nn.functional.avg_pool2d(img, (size, 1), 1, (size // 2, 0), count_include_pad=False)

    def chroma(mean):
        return (mean.amax(1, keepdim=True) - mean.amin(1, keepdim=True)) / (mean.mean(1, keepdim=True) + CUE_EPS)

    near, around = box(bgr, CUE_NEAR), box(bgr, CUE_AROUND)
    luma_near, luma_around = near.mean(1, keepdim=True), around.mean(1, keepdim=True)
    return torch.cat([chroma(near), chroma(around) - chroma(near),
                      (luma_around - luma_near) / (luma_around + CUE_EPS)], dim=1)


CUE_NEAR, CUE_AROUND = 5, 25    # px: the patch and its surroundings (trainer.cue_probe's)
CUE_EPS = 4 / 255               # keeps the ratios finite on black


def _unet_fullres(encoder, decoder_channels, cues=False):
    import segmentation_models_pytorch as smp

    class UnetFullRes(smp.Unet):
        """smp's Unet plus a detail branch at full resolution, added to its logits.

        smp's Unet has no stride-1 skip: its first look at the image is a stride-2 stem, where a
        2-px speck in foliage is already averaged with its surroundings (session 6: the same
        network on 2x-upscaled busy tiles found 19 % instead of 7 % of dust at 1-2x the local
        contrast). The branch sees the input at stride 1 (with `cues`, colour_cues of it too);
        its last layer starts at zero, so a network warm-started from a plain Unet begins
        exactly where that Unet was."""

        def __init__(self, **kw):
            super().__init__(**kw)
            width = DETAIL_CHANNELS
            self.detail = nn.Sequential(
                nn.Conv2d(6 if cues else 3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            self.fuse = nn.Sequential(
                nn.Conv2d(width + decoder_channels[-1], width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1))
            nn.init.zeros_(self.fuse[-1].weight)
            nn.init.zeros_(self.fuse[-1].bias)

        def forward(self, x):
            decoded = self.decoder(self.encoder(x))
            seen = torch.cat([x, colour_cues(x * STD + MEAN)], dim=1) if cues else x
            return (self.segmentation_head(decoded)
                    + self.fuse(torch.cat([decoded, self.detail(seen)], dim=1)))

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
    "unet-chroma": {"family": "smp.Unet + full-resolution detail branch seeing colour cues",
                    "build": lambda encoder, decoder_channels: _unet_fullres(encoder, decoder_channels, cues=True),
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
