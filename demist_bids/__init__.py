"""demist: DEMIST latent-diffusion synthesis of qMT PSR maps as a BIDS-App."""

__version__ = "0.1.0"
