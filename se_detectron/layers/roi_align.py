"""RoIAlign as two small matrix products: an exact CPU alternative to torchvision's kernel.

RoIAlign (He et al., "Mask R-CNN", arXiv 1703.06870, Sec. 3) averages, for every output bin, a
``grid_h x grid_w`` grid of bilinearly interpolated samples. Bilinear interpolation is separable
and so is the sample grid, so for one RoI the whole operation is::

    out[c, i, j] = sum_{y, x} Wy[i, y] * feature[c, y, x] * Wx[j, x]

where row ``i`` of ``Wy`` (``pooled_h x H``) holds the summed vertical interpolation weights of
bin row ``i``'s samples (divided by the sample count) and ``Wx`` the horizontal ones. Computed
per image as two batched matrix products, forward and backward run on PyTorch's multi-threaded
GEMMs, whereas torchvision's CPU ``roi_align`` (and above all its backward) is a single-threaded
loop: on the demo's 2-core CPU that backward was 12% of a fine-tuning iteration.

The weights reproduce torchvision's kernel exactly (``aligned`` offsets, ``sampling_ratio`` 0 =
adaptive grid, samples outside ``[-1, H]`` dropped, clamping at the border), so the outputs agree
to float rounding (``tests/test_roi_align.py``). The dense products cost
``O(R * pooled_h * C * H * W)``: cheap for the small feature maps of CPU training (the synthetic
configs' 128x128 images) but not for COCO-sized maps, so it is opt-in
(``MODEL.CPU_ROI_ALIGN: "separable"``, applied by :func:`use_separable_roi_align`), used on CPU
tensors only (CUDA tensors go to torchvision's kernel), and RoIs are processed in chunks that
bound the intermediate product's memory.
"""

from typing import Tuple

import torch
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import ROIPooler
from torch import nn
from torchvision.ops import roi_align

__all__ = [
    "CPU_ROI_ALIGN_CHOICES",
    "SeparableROIAlign",
    "separable_roi_align",
    "use_separable_roi_align",
]

#: The values of ``MODEL.CPU_ROI_ALIGN``.
CPU_ROI_ALIGN_CHOICES = ("torchvision", "separable")
# Largest intermediate ``(rois * pooled_h) x (C * W)`` product, in elements, built at once.
_MAX_CHUNK_ELEMENTS = 1 << 24


def _axis_weights(
    start: torch.Tensor, length: torch.Tensor, pooled: int, grid: torch.Tensor, size: int
) -> torch.Tensor:
    """Summed interpolation weights of every bin's samples along one axis.

    Args:
        start: (R,) first coordinate of each RoI on the feature map (offset applied).
        length: (R,) RoI extent along the axis.
        pooled: number of output bins along the axis.
        grid: (R,) samples per bin along the axis; a RoI with ``grid <= 0`` gets no weights
            (torchvision's kernel gives such an empty grid a zero output).
        size: feature map size along the axis.

    Returns:
        (R, pooled, size) tensor: row ``(r, p)`` sums the linear interpolation weights of bin
        ``p``'s samples (not yet divided by the sample count).
    """
    num_rois = start.shape[0]
    max_grid = max(int(grid.max().item()), 1) if num_rois else 1
    bin_size = length / pooled
    p = torch.arange(pooled, dtype=start.dtype, device=start.device).view(1, pooled, 1)
    s = torch.arange(max_grid, dtype=start.dtype, device=start.device).view(1, 1, max_grid)
    g = grid.clamp(min=1).to(start.dtype).view(num_rois, 1, 1)  # spacing; validity below
    coord = (
        start.view(num_rois, 1, 1)
        + p * bin_size.view(num_rois, 1, 1)
        + (s + 0.5) * bin_size.view(num_rois, 1, 1) / g
    )  # (R, pooled, max_grid)
    valid = (s < grid.view(num_rois, 1, 1)) & (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0.0)
    low = coord.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    coord = torch.where(at_edge, low, coord)
    high = torch.where(at_edge, low, low + 1)
    frac = coord - low
    w_low = torch.where(valid, 1.0 - frac, torch.zeros_like(frac))
    w_high = torch.where(valid, frac, torch.zeros_like(frac))
    weights = torch.zeros(num_rois, pooled, size, dtype=start.dtype, device=start.device)
    weights.scatter_add_(2, low.long(), w_low)
    weights.scatter_add_(2, high.long(), w_high)
    return weights


def _bin_weights(
    rois: torch.Tensor,
    height: int,
    width: int,
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``Wy`` (R, pooled_h, H) with the 1 / sample count folded in, and ``Wx`` (R, pooled_w, W)."""
    pooled_h, pooled_w = output_size
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, k] * spatial_scale - offset for k in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # the legacy kernel forces malformed RoIs to 1x1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
        grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
    else:  # adaptive: ceil(roi size / bins) samples per bin, as torchvision
        grid_h = torch.ceil(roi_h / pooled_h).long()
        grid_w = torch.ceil(roi_w / pooled_w).long()
    count = (grid_h * grid_w).clamp(min=1).to(rois.dtype)  # as torchvision: max(count, 1)
    weights_y = _axis_weights(y1, roi_h, pooled_h, grid_h, height)
    weights_x = _axis_weights(x1, roi_w, pooled_w, grid_w, width)
    return weights_y / count.view(-1, 1, 1), weights_x


def separable_roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """``torchvision.ops.roi_align`` computed as matrix products (see the module docstring).

    Args:
        input: (N, C, H, W) feature map.
        rois: (R, 5) boxes ``(batch index, x1, y1, x2, y2)`` in input-image coordinates.
        output_size: ``(pooled_h, pooled_w)``.
        spatial_scale: feature map size / image size.
        sampling_ratio: samples per bin along each axis; 0 for ``ceil(roi size / pooled size)``.
        aligned: subtract half a pixel from the scaled boxes (Detectron2's ``ROIAlignV2``).

    Returns:
        (R, C, pooled_h, pooled_w) tensor, differentiable with respect to ``input`` (as
        torchvision's, not with respect to ``rois``).
    """
    output_size = (int(output_size[0]), int(output_size[1]))
    pooled_h, pooled_w = output_size
    _, channels, height, width = input.shape
    num_rois = rois.shape[0]
    out = input.new_zeros(num_rois, channels, pooled_h, pooled_w)
    if num_rois == 0:
        return out + input.sum() * 0  # keeps the graph (and a zero gradient) as torchvision's
    with torch.no_grad():
        boxes = rois.detach().to(input.dtype)
        weights_y, weights_x = _bin_weights(
            boxes, height, width, output_size, spatial_scale, sampling_ratio, aligned
        )
        batch_index = boxes[:, 0].long()
    rows_per_roi = pooled_h * channels * width
    chunk = max(1, _MAX_CHUNK_ELEMENTS // max(rows_per_roi, 1))
    pieces, order = [], []
    for image in torch.unique(batch_index).tolist():
        # (H, C * W): rows are feature rows y, columns (c, x)
        feature = input[image].permute(1, 0, 2).reshape(height, channels * width)
        index = torch.nonzero(batch_index == image).flatten()
        for begin in range(0, index.numel(), chunk):
            part = index[begin : begin + chunk]
            rois_here = part.numel()
            wy = weights_y[part].reshape(rois_here * pooled_h, height)
            rows = (wy @ feature).view(rois_here, pooled_h * channels, width)
            pooled = torch.bmm(rows, weights_x[part].transpose(1, 2))  # (r, ph * C, pw)
            pieces.append(pooled.view(rois_here, pooled_h, channels, pooled_w))
            order.append(part)
    pooled = torch.cat(pieces).permute(0, 2, 1, 3)
    return out.index_copy(0, torch.cat(order), pooled)


class SeparableROIAlign(ROIAlign):
    """Detectron2's ``ROIAlign`` computing CPU tensors with :func:`separable_roi_align`.

    Same constructor and outputs as ``detectron2.layers.ROIAlign``; tensors on other devices,
    quantized tensors and scripted models go to torchvision's kernel.
    """

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and input.device.type == "cpu" and not input.is_quantized:
            return self._separable(input, rois)
        # torchvision's kernel, called as Detectron2's ROIAlign.forward calls it (TorchScript
        # cannot compile super())
        assert rois.dim() == 2 and rois.size(1) == 5
        if input.is_quantized:
            input = input.dequantize()
        return roi_align(
            input,
            rois.to(dtype=input.dtype),
            self.output_size,
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
        )

    @torch.jit.unused
    def _separable(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        # not compiled by TorchScript: a scripted model uses torchvision's kernel
        assert rois.dim() == 2 and rois.size(1) == 5
        return separable_roi_align(
            input,
            rois,
            self.output_size,
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
        )


def use_separable_roi_align(model: nn.Module) -> int:
    """Swap every ``ROIAlign`` of the model's ``ROIPooler``\\ s for :class:`SeparableROIAlign`.

    Args:
        model: a built Detectron2 model (its poolers' settings are kept).

    Returns:
        The number of ``ROIAlign`` modules replaced (0 when the model pools with RoIPool or
        rotated RoIAlign, which are left as they are).
    """
    replaced = 0
    for module in model.modules():
        if not isinstance(module, ROIPooler):
            continue
        for i, pooler in enumerate(module.level_poolers):
            if type(pooler) is ROIAlign:
                module.level_poolers[i] = SeparableROIAlign(
                    pooler.output_size, pooler.spatial_scale, pooler.sampling_ratio, pooler.aligned
                )
                replaced += 1
    return replaced
