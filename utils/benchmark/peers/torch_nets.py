"""The peer written the usual PyTorch way (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Dropout).

PyTorch is an optional extra (``pip install fer-jax[bench]``), never a runtime dependency:
import this module only when ``torch`` is installed. Same layers, order and parameter count
as ours (see ``utils.benchmark.peers``); trained with torch.optim.SGD.
"""
from __future__ import annotations

import torch
from torch import nn

from convnets.networks import Conv, Pool, Residual
from utils.benchmark.peers import PeerSpec

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}


def _linear_tail(n_features, pool, p_drop, spec: PeerSpec, activation=None, dims=2):
    """BN -> max-pool -> activation -> dropout, after a conv (dims=2) or a dense layer (1)."""
    layers = []
    if spec.batch_norm:
        layers.append(nn.BatchNorm2d(n_features) if dims == 2 else nn.BatchNorm1d(n_features))
    if pool:
        layers.append(nn.MaxPool2d(pool))
    layers.append((activation or _ACTIVATIONS[spec.activation])())
    layers.append(nn.Dropout(p_drop))
    return layers


class _Residual(nn.Module):
    """conv-BN-act-dropout, conv-BN, + zero-padded identity, act, dropout."""

    def __init__(self, c_in, width, p_first, p_second, spec: PeerSpec):
        super().__init__()
        bias = not spec.batch_norm
        self.first = nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1, bias=bias),
                                   *_linear_tail(width, None, p_first, spec))
        self.second = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=bias),
                                    *_linear_tail(width, None, 0.0, spec, nn.Identity)[:-1])
        self.padding = width - c_in
        self.out = nn.Sequential(_ACTIVATIONS[spec.activation](), nn.Dropout(p_second))

    def forward(self, x):
        y = self.second(self.first(x))
        return self.out(y + nn.functional.pad(x, (0, 0, 0, 0, 0, self.padding)))


def torch_net(spec: PeerSpec) -> nn.Module:
    """The network as an nn.Sequential over NCHW images."""
    height, width, channels = spec.input_shape
    layers, drops, items, i = [], iter(spec.conv_dropout), list(spec.architecture), 0
    while i < len(items):
        item = items[i]
        following = items[i + 1] if i + 1 < len(items) else None
        if isinstance(item, Conv):
            pool = following.size if isinstance(following, Pool) else None
            layers.append(nn.Conv2d(channels, item.filters, item.kernel,
                                    padding=item.kernel // 2, bias=not spec.batch_norm))
            layers += _linear_tail(item.filters, pool, next(drops), spec)
            channels = item.filters
            if pool:
                height, width = height // pool, width // pool
            i += 2 if pool else 1
            continue
        if isinstance(item, Residual):
            layers.append(_Residual(channels, item.width, next(drops), next(drops), spec))
            channels = item.width
        elif isinstance(item, Pool):
            layers.append(nn.MaxPool2d(item.size))
            height, width = height // item.size, width // item.size
        i += 1
    layers.append(nn.Flatten())
    n_in = height * width * channels
    for n_out in spec.hidden:
        layers.append(nn.Linear(n_in, n_out, bias=not spec.batch_norm))
        layers += _linear_tail(n_out, None, spec.p_drop, spec, dims=1)
        n_in = n_out
    layers.append(nn.Linear(n_in, spec.n_classes))
    return nn.Sequential(*layers)


class TorchSteps:
    """The train step (forward, backward, SGD update) and inference of the PyTorch peer.

    ``channels_last``: NHWC activations (PyTorch's advice for conv nets on CPU, where its
    oneDNN kernels prefer them); the default is PyTorch's default NCHW. Inputs are given
    NCHW either way (``input``). ``dtype="bfloat16"``: the forward pass under autocast.
    """

    def __init__(self, spec: PeerSpec, device: str = "cpu", learning_rate: float = 0.1,
                 seed: int = 0, channels_last: bool = False, dtype: str = "float32"):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        # bfloat16: PyTorch's mixed precision, autocast (float32 parameters and optimiser).
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                       enabled=dtype == "bfloat16")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = torch_net(spec).to(self.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=learning_rate)
        self.loss = nn.CrossEntropyLoss()

    def input(self, images_nhwc):
        """A float32 NumPy batch [B, H, W, 1] as this peer's input tensor."""
        x = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=self.memory_format).to(self.device)

    def param_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def train(self, x, y):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            cost = self.loss(self.model(x).float(), y)
        cost.backward()
        self.optimizer.step()
        return cost

    def eval(self, x):
        self.model.eval()
        with torch.inference_mode(), self.autocast:
            return self.model(x)

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
