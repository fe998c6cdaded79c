"""demist: DEMIST latent-diffusion synthesis of qMT PSR maps as a BIDS-App."""

__version__ = "0.1.0"
__all__ = ["PSRResult", "synthesize_pair"]


def __getattr__(name: str):
    """``from demist_bids import synthesize_pair`` without importing anything heavy up front."""
    if name in __all__:
        from demist_bids import api

        return getattr(api, name)
    raise AttributeError(f"module 'demist_bids' has no attribute {name!r}")
