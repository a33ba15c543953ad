"""t5edu: the tested package behind the book "T5 from Scratch".

Every module the book builds from scratch lives here in its final form; chapters import it.
Each section below belongs to one part of the book; add exports under the matching heading.
"""

__version__ = "0.1.0"

# Foundations: attention and its backends (chapters 1, 9)
from t5edu.activations import ACTIVATIONS, FEED_FORWARD_PROJ, get_activation
from t5edu.attention import MultiHeadAttention, scaled_dot_product_attention
from t5edu.backends import BACKENDS, attention, register_backend

# Norms (chapters 3, 5)
from t5edu.rmsnorm import RMSNorm
from t5edu.norms import NORMS, build_norm

# T5 (chapters 2-4)
from t5edu.config import T5Config, num_parameters
from t5edu.relative_position import RelativePositionBias, relative_position_bucket

# Modern techniques: GLU feed-forwards, RoPE, ALiBi (chapters 6-8)

# Flash and memory-efficient attention (chapter 9)

# Data, tokenizer, training (chapters 10, 11, 13)

# Book utilities
from t5edu.utils import compare, get_device, seed_everything, setup
