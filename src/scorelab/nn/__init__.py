"""Networks only: forward(x, t); no schedule knowledge."""

from scorelab.nn.embedding import TimeEmbedding, sinusoidal_embedding
from scorelab.nn.mlp import MLP
from scorelab.nn.unet import UNet

__all__ = ["MLP", "TimeEmbedding", "UNet", "sinusoidal_embedding"]
