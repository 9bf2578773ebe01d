"""An independent PyTorch reference of the official network, written from docs/conventions.md.

Module names follow the official code so that `state_dict()` has the official keys. The STSS
here uses the authors' fallback formulation (a full HW x HW correlation per frame pair, then
gathering the window), not our shifted windows, so the two implementations share nothing.
Tensors are NCHW with frames folded into the batch clip-major, as in the official code.
"""

import torch
import torch.nn.functional as F
from torch import nn


def temporal_shift(x, frames, div=8):
  nt, c, h, w = x.shape
  x = x.view(nt // frames, frames, c, h, w)
  fold = c // div
  out = torch.zeros_like(x)
  out[:, :-1, :fold] = x[:, 1:, :fold]
  out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
  out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
  return out.view(nt, c, h, w)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride, frames, shift):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = None
    if stride != 1 or inplanes != planes * 4:
      self.downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
      )
    self.frames, self.shift = frames, shift

  def forward(self, x):
    out = temporal_shift(x, self.frames) if self.shift else x
    out = F.relu(self.bn1(self.conv1(out)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = self.downsample(x) if self.downsample is not None else x
    return F.relu(out + identity)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, frames, shift):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
      )
    self.frames, self.shift = frames, shift

  def forward(self, x):
    out = temporal_shift(x, self.frames) if self.shift else x
    out = F.relu(self.bn1(self.conv1(out)))
    out = self.bn2(self.conv2(out))
    identity = self.downsample(x) if self.downsample is not None else x
    return F.relu(out + identity)


def conv_bn_relu3d(cin, cout, stride, padding):
  return nn.Sequential(
    nn.Conv3d(cin, cout, (1, 3, 3), stride, padding, bias=False), nn.BatchNorm3d(cout), nn.ReLU()
  )


class STSSTransformation(nn.Module):
  def __init__(self, d_in, d_hid, frames, window):
    super().__init__()
    self.downsample = nn.Sequential(
      nn.Conv2d(d_in, d_hid, 3, 2, 1, bias=False), nn.BatchNorm2d(d_hid), nn.ReLU()
    )
    self.frames, self.window = frames, window

  def forward(self, x):
    x = self.downsample(x)
    nt, c, h, w = x.shape
    x = x / torch.sqrt((x**2).sum(1, keepdim=True) + 1e-6)
    x = x.view(nt // self.frames, self.frames, c, h * w)
    L, U, V = self.window
    out = x.new_zeros(nt // self.frames, self.frames, h, w, L, U, V)
    for t in range(self.frames):
      for l in range(L):
        tt = t + l - L // 2
        if not 0 <= tt < self.frames:
          continue  # outside the clip: stays 0
        full = torch.einsum("bcn,bcm->bnm", x[:, t], x[:, tt]).view(-1, h, w, h, w)
        for u in range(U):
          for v in range(V):
            dh, dw = u - U // 2, v - V // 2
            rows = torch.tensor(range(max(0, -dh), min(h, h - dh)), dtype=torch.long)
            cols = torch.tensor(range(max(0, -dw), min(w, w - dw)), dtype=torch.long)
            if not len(rows) or not len(cols):
              continue  # the whole offset falls outside the frame
            i, j = torch.meshgrid(rows, cols, indexing="ij")
            out[:, t, i, j, l, u, v] = full[:, i, j, i + dh, j + dw]
    return out


class STSSExtraction(nn.Module):
  def __init__(self, chnls):
    super().__init__()
    self.conv0 = conv_bn_relu3d(1, chnls[0], 1, (0, 1, 1))
    self.conv1 = conv_bn_relu3d(chnls[0], chnls[1], (1, 2, 2), (0, 1, 1))
    self.conv2 = conv_bn_relu3d(chnls[1], chnls[2], (1, 2, 2), (0, 1, 1))
    self.conv3 = conv_bn_relu3d(chnls[2], chnls[3], 1, 0)

  def forward(self, stss):
    b, t, h, w, l, u, v = stss.shape
    x = stss.reshape(b * t * h * w, 1, l, u, v)
    x = self.conv3(self.conv2(self.conv1(self.conv0(x))))  # (bthw, c, l, 1, 1)
    return x.view(b, t, h, w, -1, l).permute(0, 5, 4, 1, 2, 3).reshape(b * l, -1, t, h, w)


class STSSIntegration(nn.Module):
  def __init__(self, d_in, d_out, window, chnls):
    super().__init__()
    self.L = window[0]
    self.conv0 = conv_bn_relu3d(d_in, chnls[0], 1, (0, 1, 1))
    self.conv1 = conv_bn_relu3d(chnls[0], chnls[1], 1, (0, 1, 1))
    self.conv2 = conv_bn_relu3d(chnls[1], chnls[2], 1, (0, 1, 1))
    self.conv3_fuse = nn.Sequential(
      nn.Identity(), *conv_bn_relu3d(chnls[2] * self.L, chnls[3], 1, (0, 1, 1))
    )
    self.upsample = nn.Sequential(
      nn.ConvTranspose3d(chnls[3], d_out, 1, (1, 2, 2), output_padding=(0, 1, 1), bias=False),
      nn.BatchNorm3d(d_out),
    )

  def forward(self, x):
    x = self.conv2(self.conv1(self.conv0(x)))  # (b l, c, t, h, w)
    bl, c, t, h, w = x.shape
    x = x.view(bl // self.L, self.L * c, t, h, w)  # l-major channels
    x = self.upsample(self.conv3_fuse(x))
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


class SELFYBlock(nn.Module):
  def __init__(
    self, d_in, d_hid, frames, window=(5, 9, 9), ext=(4, 16, 64, 64), integ=(64, 64, 64, 64)
  ):
    super().__init__()
    self.stss_transformation = STSSTransformation(d_in, d_hid, frames, window)
    self.stss_extraction = STSSExtraction(ext)
    self.stss_integration = STSSIntegration(ext[-1], d_in, window, integ)

  def forward(self, x):
    out = self.stss_integration(self.stss_extraction(self.stss_transformation(x)))
    return F.relu(x + out)


class ResNet(nn.Module):
  def __init__(self, block, layers, frames, shift, selfy_after):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    inplanes = 64
    self.selfy_after = selfy_after
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), start=1):
      blocks = []
      for i in range(count):
        blocks.append(block(inplanes, planes, 2 if stage > 1 and i == 0 else 1, frames, shift))
        inplanes = planes * block.expansion
      setattr(self, f"layer{stage}", nn.Sequential(*blocks))
      if stage == selfy_after:
        self.selfy = SELFYBlock(inplanes, 128, frames)
    self.out_features = inplanes

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    for stage in range(1, 5):
      x = getattr(self, f"layer{stage}")(x)
      if stage == self.selfy_after:
        x = self.selfy(x)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


class TSN(nn.Module):
  """base_model + new_fc (Conv1d) + average over frames; eval mode only."""

  def __init__(self, num_classes, frames, depth=50, shift=True, selfy_after=2):
    super().__init__()
    block, layers = {50: (Bottleneck, (3, 4, 6, 3)), 18: (BasicBlock, (2, 2, 2, 2))}[depth]
    self.base_model = ResNet(block, layers, frames, shift, selfy_after)
    self.new_fc = nn.Conv1d(self.base_model.out_features, num_classes, 1)
    self.frames = frames

  def forward(self, clips):
    """clips (N, T, 3, H, W) -> logits (N, classes)."""
    n, t = clips.shape[:2]
    features = self.base_model(clips.flatten(0, 1))
    logits = self.new_fc(features[..., None])[..., 0]
    return logits.view(n, t, -1).mean(1)


def randomize(module, seed=0):
  """Random weights and BN statistics everywhere (no zero scales), so nothing cancels."""
  generator = torch.Generator().manual_seed(seed)

  def uniform(tensor, low, high):
    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
        uniform(m.weight, 0.5, 1.5)
        uniform(m.bias, -0.2, 0.2)
        uniform(m.running_mean, -0.2, 0.2)
        uniform(m.running_var, 0.5, 1.5)
      elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)):
        fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose3d) else m.weight.shape[0]
        m.weight.copy_(torch.randn(m.weight.shape, generator=generator) / fan_in**0.5)
        if m.bias is not None:
          uniform(m.bias, -0.2, 0.2)
  return module.eval()
