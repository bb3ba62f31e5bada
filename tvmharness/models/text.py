"""A text classifier of BERT-tiny's shape, seeded: the zoo's model of several integer inputs."""

from __future__ import annotations

import torch
from torch import nn

VOCAB, WIDTH, LAYERS, HEADS, SEQUENCE = 30522, 128, 2, 2, 128


class BertTiny(nn.Module):
    """Token and position embeddings, a post-norm GELU transformer encoder, a tanh pooler on the first
    (CLS) token and a two-class head. `attention_mask` is 1 where a token counts; the first position
    always does, as a CLS token would (a row of all padding has no attention to take)."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Embedding(SEQUENCE, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.pooler = nn.Linear(WIDTH, WIDTH)
        self.classifier = nn.Linear(WIDTH, 2)
        self.register_buffer("position_ids", torch.arange(SEQUENCE)[None], persistent=False)

    def forward(self, input_ids, attention_mask):
        x = self.norm(self.tokens(input_ids) + self.positions(self.position_ids[:, : input_ids.shape[1]]))
        padding = attention_mask == 0
        padding = torch.cat([torch.zeros_like(padding[:, :1]), padding[:, 1:]], dim=1)
        x = self.encoder(x, src_key_padding_mask=padding)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def bert_tiny() -> BertTiny:
    torch.manual_seed(0)
    return BertTiny().eval()
