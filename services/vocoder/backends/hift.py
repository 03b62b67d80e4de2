"""HiFT vocoder (CosyVoice-300M-25Hz ``hift.pt``) for the stepaudio profile (dir rules: models.stepaudio.cosyvoice).
"""

from __future__ import annotations

import numpy as np

from models.stepaudio.cosyvoice import cosy_dirs, fail_if_missing, load_hift_dir, missing_files, resolve_device
from services.vocoder.backends.base import VocoderBackend
from services.vocoder.settings import VocoderSettings


class HiftVocoder(VocoderBackend):
    """HiFT (NSF + iSTFT HiFi-GAN) at 22,050 Hz; ``music=True`` uses the CosyVoice-300M-25Hz-Music weights."""

    def __init__(self, settings: VocoderSettings) -> None:
        import torch

        if not settings.model_dir:
            raise ValueError("STEPAUDIO_VOCODER_MODEL_DIR is empty: set it to the CosyVoice-300M-25Hz dir "
                             "(or Step-Audio-TTS-3B, or the models root)")
        common, music = cosy_dirs(settings.model_dir)
        fail_if_missing(missing_files([common / "hift.pt", music / "hift.pt"]), "vocoder (HiFT)",
                        "STEPAUDIO_VOCODER_MODEL_DIR")
        torch.set_num_threads(max(1, settings.model_threads))
        self.device = resolve_device(settings.device)
        self.models = {False: load_hift_dir(common, self.device), True: load_hift_dir(music, self.device)}
        self.sample_rate = self.models[False].cfg.sampling_rate
        self.hop_length = self.models[False].cfg.hop
        self.num_bins = self.models[False].cfg.in_channels
        self._seed = 0

    def vocode(self, mel: np.ndarray, music: bool = False) -> np.ndarray:
        import torch

        m = np.asarray(mel, dtype=np.float32)
        if m.ndim != 2 or m.shape[1] != self.num_bins:
            raise ValueError(f"mel must be [frames, {self.num_bins}], got {list(m.shape)}")
        if m.shape[0] == 0:
            return np.zeros(0, np.float32)
        hift = self.models[bool(music)]
        # Seeded per block: the NSF noise (and so the output) is reproducible for the same mel.
        g = torch.Generator().manual_seed(self._seed)
        x = torch.as_tensor(m.T.copy(), device=self.device)[None]
        with torch.inference_mode():
            wav, _ = hift.inference(x, generator=g)
        return wav[0].float().cpu().numpy().astype(np.float32, copy=False)
