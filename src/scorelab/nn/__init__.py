"""Networks only: forward(x, t, y=None); no schedule knowledge."""

from scorelab.nn.classifier import EncoderClassifier
from scorelab.nn.embedding import LabelEmbedding, TimeEmbedding, sinusoidal_embedding
from scorelab.nn.mlp import MLP
from scorelab.nn.unet import UNet

__all__ = [
    "MLP",
    "EncoderClassifier",
    "LabelEmbedding",
    "TimeEmbedding",
    "UNet",
    "sinusoidal_embedding",
]
