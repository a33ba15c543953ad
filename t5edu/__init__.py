"""t5edu: the tested package behind the book "T5 from Scratch".

Every module the book builds from scratch lives here in its final form; chapters import it.
"""

__version__ = "0.1.0"

from t5edu.activations import ACTIVATIONS, FEED_FORWARD_PROJ, get_activation
from t5edu.attention import MultiHeadAttention, scaled_dot_product_attention
from t5edu.backends import BACKENDS, attention, register_backend
from t5edu.rmsnorm import RMSNorm
from t5edu.utils import get_device, seed_everything, setup

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "FEED_FORWARD_PROJ",
    "MultiHeadAttention",
    "RMSNorm",
    "attention",
    "get_activation",
    "get_device",
    "register_backend",
    "scaled_dot_product_attention",
    "seed_everything",
    "setup",
]
