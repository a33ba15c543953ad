"""t5edu: the tested package behind the book "T5 from Scratch".

Every module the book builds from scratch lives here in its final form; chapters import it.
Each section below belongs to one part of the book; add exports under the matching heading.
"""

from t5edu._version import __version__

# Foundations: attention and its backends (chapters 1, 9)
from t5edu.activations import ACTIVATIONS, FEED_FORWARD_PROJ, get_activation
from t5edu.attention import scaled_dot_product_attention
from t5edu.multi_head_attention import MultiHeadAttention
from t5edu.backends import BACKENDS, attention, register_backend

# Norms (chapters 3, 5)
from t5edu.rmsnorm import RMSNorm
from t5edu.norms import NORMS, LayerNorm, build_norm
from t5edu.fast_rmsnorm import FastRMSNorm, fast_rms_norm, saved_tensor_bytes
from t5edu.adaptive_rmsnorm import AdaptiveRMSNorm
from t5edu.group_rmsnorm import GroupRMSNorm

# T5 (chapters 2-4)
from t5edu.config import T5Config, num_parameters
from t5edu.relative_position import RelativePositionBias, relative_position_bucket
from t5edu.kv_cache import T5Cache
from t5edu.feed_forward import T5DenseActDense, T5DenseGatedActDense, T5LayerFF
from t5edu.t5_attention import T5Attention
from t5edu.t5_blocks import T5Block
from t5edu.t5_stacks import T5Decoder, T5Encoder
from t5edu.t5_model import Seq2SeqLMOutput, T5ForConditionalGeneration, T5Model
from t5edu.generation import generate
from t5edu.hf import from_hf, from_pretrained, save_pretrained, to_hf

# Modern techniques: GLU feed-forwards, RoPE, ALiBi (chapters 6-8)
from t5edu.glu import (
    GLU_VARIANTS,
    GLUFeedForward,
    GLUVariants,
    SwiGLU,
    SwiGLUFeedForward,
    SwiGLUMLP,
    glu_hidden_dim,
)
from t5edu.rope import (
    RoPE,
    RoPEAttention,
    half_split_index,
    rope_inv_freq,
    to_half_split,
    to_interleaved,
)
from t5edu.alibi import ALiBi, ALiBiAttention, AdaptiveALiBi, CausalALiBiAttention, alibi_slopes

# Flash and memory-efficient attention (chapter 9)
from t5edu.flash_attention import flash_attention
from t5edu.t5_flash import t5_flash_attention
from t5edu.memory_efficient import MemoryEfficientAttention, memory_efficient_attention
from t5edu.flash_modules import FlashAttention, FlashMHA
from t5edu.backends import resolve_backend
from t5edu.kernels import triton_available, triton_flash_attention, triton_t5_flash_attention

# Data, tokenizer, training (chapters 10, 11, 13)
from t5edu import data
from t5edu.data import build_default, collate, span_corruption, stdlib_corpus
from t5edu.tokenizer import T5Tokenizer, default_tokenizer, train_tokenizer
from t5edu import train
from t5edu.train import AdamWScale, TrainConfig, Trainer, build_optimizer, build_scheduler

# SuperGLUE (chapter 14)
import t5edu.superglue

# Book utilities
from t5edu.utils import compare, get_device, seed_everything, setup
