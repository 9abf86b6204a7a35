"""Structured pruning: a trained network with fewer channels in the same layers.

torch-pruning (its dependency graph) removes whole channel groups, i.e. a convolution's output
channels together with every layer that reads them, ranked by the L2 norm of their weights. What
is left keeps its trained weights, so a short fine-tune (best with `--teacher` = the unpruned
network) recovers far faster than training the small network from scratch.

A pruned network is described by its spec alone: spec["channels"] holds the shape of every
convolution and batch norm that pruning changed ({name: [in, out, groups]} / {name: [features]}),
so models.build(spec) rebuilds it without torch-pruning and every loader (resume, export,
teacher, --init) works unchanged.
"""
import torch
from torch import nn

from . import model as models
from .settings import PRUNE_ROUND_TO

EXAMPLE_SIZE = 256          # the graph is traced once on a tile of this size


def shapes(net: nn.Module) -> dict:
    """{module name: its channel shape} for every convolution and batch norm."""
    out = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            out[name] = [module.in_channels, module.out_channels, module.groups]
        elif isinstance(module, nn.BatchNorm2d):
            out[name] = [module.num_features]
    return out


def reshape(net: nn.Module, channels: dict) -> nn.Module:
    """Give the named layers of a freshly built network these channel shapes (zero weights: the
    pruned network's state dict is loaded next)."""
    for name, shape in channels.items():
        module = net.get_submodule(name)
        if isinstance(module, nn.Conv2d):
            c_in, c_out, groups = shape
            module.in_channels, module.out_channels, module.groups = c_in, c_out, groups
            module.weight = nn.Parameter(torch.zeros(c_out, c_in // groups, *module.kernel_size))
            if module.bias is not None:
                module.bias = nn.Parameter(torch.zeros(c_out))
        elif isinstance(module, nn.BatchNorm2d):
            (n,) = shape
            module.num_features = n
            module.weight = nn.Parameter(torch.ones(n))
            module.bias = nn.Parameter(torch.zeros(n))
            module.running_mean = torch.zeros(n)
            module.running_var = torch.ones(n)
        else:
            raise ValueError(f"spec channels: {name} is a {type(module).__name__}, not a conv or batch norm")
    return net


def prune(net: models.DustNet, ratio: float, round_to: int = PRUNE_ROUND_TO) -> models.DustNet:
    """Remove `ratio` of the channels of every prunable group, in place; returns the network
    with its spec updated. The logit convolutions (one output channel) are left alone."""
    import torch_pruning as tp
    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio {ratio} is not between 0 and 1")
    unpruned_spec = {k: v for k, v in net.spec.items() if k != "channels"}
    before = shapes(models.build(unpruned_spec))
    heads = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1]
    example = torch.rand(1, 3, EXAMPLE_SIZE, EXAMPLE_SIZE)
    net.eval()
    pruner = tp.pruner.MetaPruner(net, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=heads, round_to=round_to)
    pruner.step()
    after = shapes(net)
    channels = {k: v for k, v in after.items() if before[k] != v}
    if not channels:
        raise ValueError(f"pruning {ratio} of the channels (rounded to {round_to}) left every layer as it was")
    net.spec = {**unpruned_spec, "channels": channels}
    rebuilt = models.build(net.spec).state_dict()
    wrong = [k for k, v in net.state_dict().items() if rebuilt[k].shape != v.shape]
    if wrong:                       # a layer kind that shapes() does not record
        raise ValueError(f"the pruned spec does not rebuild {wrong[:3]}")
    return net
