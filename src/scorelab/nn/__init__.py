"""Networks only: forward(x, t); no schedule knowledge."""

from scorelab.nn.embedding import TimeEmbedding, sinusoidal_embedding
from scorelab.nn.mlp import MLP

__all__ = ["MLP", "TimeEmbedding", "sinusoidal_embedding"]
