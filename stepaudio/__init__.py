"""Step-Audio serving platform: client SDK, CLI and the generated gRPC API (``stepaudio.<domain>.v1``)."""

__version__ = "0.1.0"
