"""The same networks in PyTorch, written here as the speed reference for `bench/train_step.py` (optional dependency:
`pip install torch==2.13.0`, the CPU wheel).

Layer for layer what `mtha_tf.model.build_model` builds: Newell's pre-activation bottleneck residuals, the recursive
hourglass, the stem, one stream per task with intermediate supervision and remaps, and with several tasks the fusion
residuals on the concatenated streams (paper section II.A). `parameter_count` matches the Keras model's.
"""

import copy

import torch
from torch import nn

from mtha_tf import tasks as task_table


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class Residual(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = out_channels // 2
        self.body = nn.Sequential(
            _bn(in_channels), nn.ReLU(), nn.Conv2d(in_channels, mid, 1),
            _bn(mid), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1),
            _bn(mid), nn.ReLU(), nn.Conv2d(mid, out_channels, 1),
        )  # fmt: skip
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    def __init__(self, depth, features):
        super().__init__()
        self.up = Residual(features, features)
        self.low1 = Residual(features, features)
        self.inner = Hourglass(depth - 1, features) if depth > 1 else Residual(features, features)
        self.low3 = Residual(features, features)

    def forward(self, x):
        lower = self.low3(self.inner(self.low1(nn.functional.max_pool2d(x, 2))))
        return self.up(x) + nn.functional.interpolate(lower, scale_factor=2, mode="nearest")


class MultiTaskHourglass(nn.Module):
    def __init__(self, task_names, num_stacks=2, features=256, hourglass_depth=4):
        super().__init__()
        self.tasks, self.num_stacks = task_table.parse_tasks(task_names), num_stacks
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3), _bn(64), nn.ReLU(), Residual(64, 128), nn.MaxPool2d(2),
            Residual(128, 128), Residual(128, features),
        )  # fmt: skip
        fused = features * len(self.tasks)
        self.streams = nn.ModuleDict()
        for task in self.tasks:
            channels = task_table.OUTPUT_CHANNELS[task]
            stacks = nn.ModuleList()
            for stack in range(num_stacks):
                block = nn.ModuleDict({
                    "hourglass": Hourglass(hourglass_depth, features),
                    "residual": Residual(features, features),
                    "linear": nn.Sequential(nn.Conv2d(features, features, 1), _bn(features), nn.ReLU()),
                    "head": nn.Conv2d(features, channels, 1),
                })  # fmt: skip
                if stack < num_stacks - 1:
                    if len(self.tasks) > 1:
                        block["fuse"] = nn.Sequential(Residual(fused, fused), Residual(fused, features))
                    block["remap_features"] = nn.Conv2d(features, features, 1)
                    block["remap_prediction"] = nn.Conv2d(channels, features, 1)
                stacks.append(block)
            self.streams[task] = stacks

    def forward(self, image):
        shared = self.stem(image)
        inputs = {task: shared for task in self.tasks}
        outputs = []
        for stack in range(self.num_stacks):
            features, predictions = {}, {}
            for task in self.tasks:
                block = self.streams[task][stack]
                x = block["linear"](block["residual"](block["hourglass"](inputs[task])))
                features[task], predictions[task] = x, block["head"](x)
                outputs.append(predictions[task])
            if stack == self.num_stacks - 1:
                break
            fused = torch.cat([features[t] for t in self.tasks], dim=1) if len(self.tasks) > 1 else None
            for task in self.tasks:
                block = self.streams[task][stack]
                x = block["fuse"](fused) if fused is not None else features[task]
                inputs[task] = inputs[task] + block["remap_features"](x) + block["remap_prediction"](predictions[task])
        return outputs


def parameter_count(model):
    """(trainable, non-trainable) as Keras counts them: BatchNorm running statistics are non-trainable."""
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    return trainable, buffers


def conv_flops_per_image(model, input_size):
    """Forward FLOPs per image of every Conv2d (2 x MACs), as bench/train_step.py counts the Keras model's; shapes come
    from a forward pass of a copy on the meta device (no memory, no arithmetic)."""
    total = 0

    def count(layer, _, output):
        nonlocal total
        kernel = layer.weight.shape  # (out, in / groups, height, width)
        total += 2 * output.shape[2] * output.shape[3] * kernel[0] * kernel[1] * kernel[2] * kernel[3]

    meta = copy.deepcopy(model).to("meta").eval()
    for layer in meta.modules():
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_hook(count)
    with torch.no_grad():
        meta(torch.empty(1, 3, input_size, input_size, device="meta"))
    return total
