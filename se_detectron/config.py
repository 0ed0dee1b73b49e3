"""The ``MODEL.SE`` config namespace.

Every other ``MODEL.RESNETS.*`` / ``MODEL.BACKBONE.*`` / ``MODEL.FPN.*`` key keeps its Detectron2
meaning; only what Squeeze-and-Excitation adds lives here.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_se_config"]


def add_se_config(cfg):
    """Add the commented ``MODEL.SE`` namespace to a Detectron2 config.

    Call it on ``get_cfg()`` before merging an se_detectron config file, exactly as Detectron2
    projects call ``add_pointrend_config`` / ``add_tridentnet_config``. Idempotent.

    Args:
        cfg (CfgNode): a Detectron2 config, modified in place.
    """
    if "SE" in cfg.MODEL:
        return
    _C = cfg
    _C.MODEL.SE = CN()
    # Reduction ratio r of the excitation bottleneck FC(C -> C/r) - ReLU - FC(C/r -> C)
    # (paper Sec. 3.2, ablated in Table 10; 16 is the paper's default).
    _C.MODEL.SE.REDUCTION = 16
    # Squeeze operator: global "avg" pooling (paper default) or "max" pooling (Table 11).
    _C.MODEL.SE.SQUEEZE = "avg"
    # Excitation gate: "sigmoid" (paper default), "tanh" or "relu" (Table 12).
    _C.MODEL.SE.GATE = "sigmoid"
    # Where the SE unit sits in the bottleneck (paper Fig. 5, Tables 14-15):
    #   "standard": on the residual branch, after the last 1x1 conv, before the addition;
    #   "pre":      on the block input, before the residual branch (the shortcut sees the input);
    #   "post":     after the addition with the identity branch (after the final ReLU);
    #   "identity": on the shortcut branch, in parallel to the residual branch;
    #   "3x3":      right after the 3x3 conv of the residual branch.
    _C.MODEL.SE.POSITION = "standard"
    # Which stages get SE bottlenecks; the others use Detectron2's plain BottleneckBlock.
    _C.MODEL.SE.STAGES = ["res2", "res3", "res4", "res5"]
    # Biases in the two excitation FC layers (the released SENet models have them).
    _C.MODEL.SE.BIAS = True
    # Stem: "basic" is Detectron2's BasicStem (7x7/2 conv + 3x3/2 max-pool); "deep" is SENet-154's
    # three 3x3 convs (STEM_OUT_CHANNELS/2, STEM_OUT_CHANNELS/2, STEM_OUT_CHANNELS; paper appendix)
    # followed by the 3x3/2 max-pool.
    _C.MODEL.SE.STEM = "basic"
    # Max-pool of the stem with ceil_mode=True and no padding, as in the released Caffe models
    # (and Cadene's / timm's legacy ports); False keeps Detectron2's padding=1 pooling.
    _C.MODEL.SE.STEM_CEIL_POOL = False
    # Width of each bottleneck's first 1x1 conv relative to its 3x3 conv. SENet-154 halves it
    # (0.5, paper appendix); 1.0 is the standard bottleneck.
    _C.MODEL.SE.CONV1_WIDTH_RATIO = 1.0
    # Kernel size of the strided projection shortcuts of res3-res5: 1 (ResNet), or 3 as in
    # SENet-154 (paper appendix: "3x3 stride-2 convolution" replaces the 1x1 projection).
    _C.MODEL.SE.SHORTCUT_KERNEL = 1

    return cfg
