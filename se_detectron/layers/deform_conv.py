"""Deformable 3x3 convolution with Detectron2's parameter names, computed by torchvision.

Deformable convolution (Dai et al., "Deformable Convolutional Networks", ICCV 2017) samples its
input at learned offsets from the regular grid; the modulated form (Zhu et al., "Deformable
ConvNets v2", CVPR 2019) also scales each sample by a learned mask in [0, 1]. Detectron2's
``DeformConv`` / ``ModulatedDeformConv`` compute it with the compiled ``detectron2._C``;
:class:`DeformConv` computes the same function with ``torchvision.ops.deform_conv2d`` (CPU and
CUDA, differentiable in input, offsets, mask and weight), with Detectron2's names: ``weight``
and ``norm.*`` (it is a ``detectron2.layers.Conv2d``), so weights trained with Detectron2's
``DeformBottleneckBlock`` load by name. Offsets have Detectron2's (and torchvision's) layout:
``2 * offset_groups * kh * kw`` channels, a (dy, dx) pair per kernel position and group.
"""

from typing import Optional

import torch
from detectron2.layers import Conv2d
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv"]


class DeformConv(Conv2d):
    """A ``detectron2.layers.Conv2d`` whose forward takes sampling offsets (and a mask).

    Constructed with ``Conv2d``'s arguments (``norm`` and ``activation`` included); ``bias`` is
    supported but Detectron2's deformable blocks use none.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Deformable convolution of ``x``, then the norm and the activation.

        Args:
            x: (N, C_in, H, W) input.
            offset: (N, 2 * G * kh * kw, H_out, W_out) offsets in input pixels, G offset groups.
            mask: (N, G * kh * kw, H_out, W_out) modulation in [0, 1] (DCNv2), or None (DCNv1).
        """
        out = deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out
