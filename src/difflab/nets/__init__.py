"""Networks: one U-Net for 1-D, 2-D and 3-D data, its attention layers and conditioning.

``UNet(UNetConfig(...))(z, lam, cond)`` returns the raw output that
``difflab.diffusion.make_denoiser`` turns into a denoiser; see :mod:`.conditioning` for the
``cond`` dict and :func:`null_cond` / :func:`keep_cond` for classifier-free guidance, and
:mod:`.text` for text encoders and :class:`TextConditioned`, which feeds token ids to the U-Net, and
:mod:`.clip` for the contrastive image-text model.
"""

from .attention import Attention, TemporalAttention, frame_attention_mask
from .clip import CLIP, CLIPConfig, clip_loss
from .conditioning import COND_KEYS, ConditionEmbedder, keep_cond, null_cond, sinusoidal_embedding
from .text import TextConditioned, TextEmbedding, TextEncoder, Tokenizer, get_text_encoder, save_text_encoder
from .unet import UNet
from .unet_config import DROPPABLE, UNetConfig

__all__ = [
    "Attention", "CLIP", "clip_loss", "CLIPConfig", "COND_KEYS", "ConditionEmbedder", "DROPPABLE",
    "frame_attention_mask", "get_text_encoder", "keep_cond", "null_cond", "save_text_encoder", "sinusoidal_embedding",
    "TemporalAttention", "TextConditioned", "TextEmbedding", "TextEncoder", "Tokenizer", "UNet", "UNetConfig"
]  # fmt: skip
