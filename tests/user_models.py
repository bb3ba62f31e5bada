"""User models given as path.py:function, for the tests."""

import torch
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


def tiny_mlp():
    torch.manual_seed(0)
    return TinyMLP().eval(), torch.randn(1, 16)


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot capture it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def does_not_export():
    torch.manual_seed(0)
    return DataDependent(), torch.randn(1, 16)


class RaisesOnItsExample(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        raise ValueError("no head configured")


def raises_on_its_example():
    return RaisesOnItsExample(), torch.randn(1, 16)


def example_of_the_wrong_shape():
    torch.manual_seed(0)
    return nn.Linear(16, 10), torch.randn(1, 5)


class Erfinv(nn.Module):
    """erfinv has no converter in TVM's Relax torch frontend."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.erfinv(x.clamp(-0.5, 0.5)))


def unsupported_op():
    torch.manual_seed(0)
    return Erfinv(), torch.randn(1, 16)


class MLPOtherHead(nn.Module):
    """Shares TinyMLP's first layer shape (the same workload), with a different head."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))

    def forward(self, x):
        return self.net(x)


def mlp_other_head():
    torch.manual_seed(1)
    return MLPOtherHead().eval(), torch.randn(1, 16)


class SlowConv(nn.Module):
    """One wide convolution: about a second per call with TVM's untuned kernels, long enough to
    interrupt a kit mid-job."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 64, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def slow_conv():
    torch.manual_seed(0)
    return SlowConv().eval(), torch.randn(1, 64, 128, 128)


class SumOutput(nn.Module):
    """One number out (a score, a loss): no batch, no classes."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(16, 4)

    def forward(self, x):
        return self.linear(x).sum()


def sum_output():
    torch.manual_seed(0)
    return SumOutput().eval(), torch.randn(1, 16)


def keyword_example():
    """An example given as keywords, which the engines cannot feed by position."""
    return TinyMLP().eval(), {"x": torch.randn(1, 16)}


def one_linear():
    """Only the output layer, which channel pruning keeps."""
    torch.manual_seed(0)
    return nn.Linear(16, 4).eval(), torch.randn(1, 16)


def one_conv():
    """A convolution alone: dynamic int8 quantizes no operator of it (it leaves convolutions to static int8)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval(), torch.randn(1, 3, 8, 8)


class TwoHeads(nn.Module):
    """Logits and an embedding: two outputs."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(16, 8), nn.Linear(8, 4)

    def forward(self, x):
        features = torch.relu(self.body(x))
        return self.head(features), features


def two_heads():
    torch.manual_seed(0)
    return TwoHeads().eval(), torch.randn(1, 16)


class NamedOutputs(TwoHeads):
    """TwoHeads' layers, its outputs as a dict, one a tuple: three outputs once flattened, named by their keys."""

    def forward(self, x):
        features = torch.relu(self.body(x))
        return {"logits": self.head(features), "aux": (features.sum(1), features)}


def named_outputs():
    torch.manual_seed(0)
    return NamedOutputs().eval(), torch.randn(1, 16)


class Picks(TwoHeads):
    """TwoHeads' layers, returning its logits with what a deployer reads of them: the picked class (int64)
    and a mask (bool), in a dict."""

    def forward(self, x):
        logits = self.head(torch.relu(self.body(x)))
        return {"logits": logits, "picked": (logits.argmax(1), logits > 0)}


class KeyedLikeItsInput(nn.Module):
    """A dict whose keys are its input's name and a flattened name of another key: unique names for ONNX."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        y = self.fc(x)
        return {"x": y + 1, "output": (y, y * 2), "output.0": y - 1}


def keyed_like_its_input():
    torch.manual_seed(0)
    return KeyedLikeItsInput().eval(), torch.randn(1, 16)


def in_training_mode():
    """tiny_mlp as a notebook often leaves it: in training mode."""
    module, example = tiny_mlp()
    return module.train(), example


def picks():
    torch.manual_seed(0)
    return Picks().eval(), torch.randn(1, 16)


class InputPassedOn(nn.Module):
    """Returns its input as it came, and one output twice."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        y = self.head(x)
        return x, y, y


def input_passed_on():
    torch.manual_seed(0)
    return InputPassedOn().eval(), torch.randn(1, 16)


class TokenClassifier(nn.Module):
    """Two inputs of two dtypes, as a text model takes them: int64 token ids (an embedding lookup,
    which needs ids within its vocabulary) and a float mask over the positions."""

    def __init__(self, vocab: int = 50):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, ids, mask):
        pooled = (self.embed(ids) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.fc(pooled)


def token_classifier():
    torch.manual_seed(0)
    return TokenClassifier().eval(), (torch.randint(0, 50, (1, 12)), torch.ones(1, 12))


class TinyTransformer(nn.Module):
    """A text classifier on nn.TransformerEncoder: token ids and a padding mask (the first position,
    a CLS token, always attended), attention whose modules read their layers' weights directly."""

    def __init__(self, vocab: int = 50, width: int = 16, seq: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 2, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(width, 4)

    def forward(self, input_ids, attention_mask):
        padding = attention_mask == 0
        padding = torch.cat([torch.zeros_like(padding[:, :1]), padding[:, 1:]], dim=1)
        x = self.encoder(self.embed(input_ids), src_key_padding_mask=padding)
        return self.head(x[:, 0])


def tiny_transformer():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    return TinyTransformer().eval(), (torch.randint(0, 50, (1, 8)), mask)


class TinyViT(nn.Module):
    """A vision transformer as small as one gets: patches, a CLS token, two pre-norm encoder layers."""

    def __init__(self, width: int = 64, patch: int = 8, image: int = 32):
        super().__init__()
        self.patch = nn.Conv2d(3, width, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.encoder(x)[:, 0]))


def tiny_vit():
    torch.manual_seed(0)
    return TinyViT().eval(), torch.randn(1, 3, 32, 32)


def narrow_vit():  # 32 wide in 4 heads: 30% fewer channels is no whole number of heads
    torch.manual_seed(0)
    return TinyViT(width=32).eval(), torch.randn(1, 3, 32, 32)


class KeywordSpotter(nn.Module):
    """A keyword spotter on raw audio: 1-D convolutions (a strided one, a padded one, a depthwise one),
    and an upsampling ConvTranspose1d of a decoder head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 8, 16, stride=4), nn.ReLU(), nn.Conv1d(8, 16, 3, padding=1), nn.ReLU(),
            nn.Conv1d(16, 16, 3, padding=2, dilation=2, groups=16), nn.ReLU())
        self.upsample = nn.ConvTranspose1d(16, 4, 2, stride=2)
        self.head = nn.Linear(16, 5)

    def forward(self, audio):
        x = self.features(audio)
        return self.head(x.mean(-1)), self.upsample(x)


def keyword_spotter():
    torch.manual_seed(0)
    return KeywordSpotter().eval(), torch.randn(1, 1, 400)


class MetaBranch(nn.Module):
    """An image and its metadata: a branch named as the metadata it reads (torch.fx names an attribute so)."""

    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.meta = nn.Linear(2, 4)
        self.head = nn.Linear(8, 3)

    def forward(self, image, meta):
        return self.head(torch.cat([self.image(image), self.meta(meta)], 1))


def meta_branch():
    torch.manual_seed(0)
    return MetaBranch().eval(), (torch.randn(1, 3, 8, 8), torch.randn(1, 2))


class ConvGRU(nn.Module):
    """A keyword spotter: a 1-D convolution's features, then a GRU over time."""

    def __init__(self):
        super().__init__()
        self.conv, self.rnn, self.fc = nn.Conv1d(4, 8, 3), nn.GRU(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        features = torch.relu(self.conv(x)).permute(2, 0, 1)  # (time, batch, channels)
        return self.fc(self.rnn(features)[0].mean(0))


def conv_gru():
    torch.manual_seed(0)
    return ConvGRU().eval(), torch.randn(1, 4, 20)


class FixedBatch(nn.Module):
    """A forward built for its example's batch alone: it reshapes to batch 1."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.relu(self.body(x.reshape(1, 16))))


def fixed_batch():
    torch.manual_seed(0)
    return FixedBatch().eval(), torch.randn(1, 16)


def wide_linear():
    """16 MiB of fp32 weights: enough to see in a process's resident memory."""
    torch.manual_seed(0)
    return nn.Linear(2048, 2048).eval(), torch.randn(1, 2048)


def weights_gone():
    """A model whose weights file went missing overnight."""
    raise FileNotFoundError("checkpoint.pt is missing")


def not_a_module():
    """A pair, but of a name and a tensor: no module to measure."""
    return "hello", torch.randn(1, 8)


class LastStep(nn.Module):
    """An LSTM's last step, classified: TVM 0.27's PyTorch importer computes nn.LSTM wrongly."""

    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def lstm_last_step():
    torch.manual_seed(0)
    return LastStep().eval(), torch.randn(1, 5, 8)


class ZerosOnly(nn.Module):
    """Runs on its all-zero example and raises on anything else: a baseline that fails once measured."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if bool(x.abs().sum() > 0):
            raise ValueError("only zeros, please")
        return self.fc(x)


def zeros_only():
    return ZerosOnly().eval(), torch.zeros(1, 4)


def half_linear():
    return nn.Linear(8, 4).half().eval(), torch.randn(1, 8).half()


class SkipAdd(nn.Module):
    """Made ready for PyTorch's quantization (its skip-add a FloatFunctional), not quantized: a float model."""

    def __init__(self):
        super().__init__()
        self.fc, self.skip = nn.Linear(8, 8), torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        return self.skip.add(self.fc(x), x)


def ready_to_quantize():
    torch.manual_seed(0)
    return SkipAdd().eval(), torch.randn(1, 8)


def torch_quantized():
    """Quantized by PyTorch's own tools: its layers are PyTorch's quantized kernels."""
    torch.manual_seed(0)
    float_model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    return torch.ao.quantization.quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8), torch.randn(1, 8)


class WithNone(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x), None


def none_output():
    return WithNone().eval(), torch.randn(1, 4)


class TiedEmbedding(nn.Module):
    """A language model's shape: the output layer shares the embedding's weight, and one Linear is
    applied twice."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 32)
        self.hidden = nn.Linear(32, 32)
        self.out = nn.Linear(32, 100)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        x = self.emb(ids)
        x = torch.relu(self.hidden(torch.relu(self.hidden(x))))
        return self.out(x).mean(1)


def tied_embedding():
    torch.manual_seed(0)
    return TiedEmbedding().eval(), torch.randint(0, 100, (2, 8))


class WeightNormed(nn.Module):
    """Layers whose weight is computed from parametrizations (weight norm, and one of the user's own)."""

    def __init__(self):
        super().__init__()
        from torch.nn.utils import parametrize
        from torch.nn.utils.parametrizations import weight_norm

        self.net = nn.Sequential(weight_norm(nn.Linear(16, 64)), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                 weight_norm(nn.Linear(64, 10)))
        parametrize.register_parametrization(self.net[2], "weight", Doubled())

    def forward(self, x):
        return self.net(x)


class Doubled(nn.Module):
    def forward(self, weight):
        return weight * 2


def weight_normed():
    torch.manual_seed(0)
    return WeightNormed().eval(), torch.randn(4, 16)


def already_pruned():
    """A model that still carries torch.nn.utils.prune's masks, half of its first layer's weights pruned."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    module = TinyMLP().eval()
    prune.l1_unstructured(module.net[0], "weight", amount=0.5)
    return module, torch.randn(1, 16)
