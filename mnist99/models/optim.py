"""The optimizer config: the torch optimizer partial, and which parameters get weight decay."""

from __future__ import annotations

from functools import partial

from omegaconf import DictConfig, OmegaConf
from torch import nn

from mnist99.trusted import instantiate

# Layers whose parameters are scales and shifts of normalised activations: decaying them towards
# zero fights the normalisation instead of regularising the model.
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def optimizer_from_config(cfg: DictConfig) -> tuple[partial, bool]:
    """(the torch optimizer partial, decay_norm_and_bias) from the `optimizer` group: every key but
    `decay_norm_and_bias` goes to the torch class; that one says how to group the parameters."""
    decay_norm_and_bias = bool(cfg.get("decay_norm_and_bias", True))
    torch_keys = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "decay_norm_and_bias"])
    # plain lists, not ListConfig: param_groups (betas) are saved in checkpoints, read with weights_only
    return instantiate(torch_keys, _convert_="all"), decay_norm_and_bias


def param_groups(module: nn.Module, decay_norm_and_bias: bool = True) -> list[dict]:
    """The parameters as optimizer groups. With decay_norm_and_bias=False, normalisation layers'
    weights and biases and every layer's bias form a group at weight decay 0 (fastai's
    `Learner(wd_bn_bias=False)`, its default); the rest keep the optimizer's weight decay."""
    params = [p for p in module.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params}]
    exempt = set()
    for m in module.modules():
        if isinstance(m, NORM_LAYERS):
            exempt.update(id(p) for p in m.parameters(recurse=False))
        elif isinstance(getattr(m, "bias", None), nn.Parameter):
            exempt.add(id(m.bias))
    # named: LearningRateMonitor logs each group's rate as train/lr/<name>
    groups = [{"params": [p for p in params if id(p) not in exempt], "name": "decay"},
              {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]
