"""tiering: tiered storage lifecycle for on-premise ML platforms.

``tiering.open(config)`` returns a :class:`~tiering.api.Tiering` handle: register, resolve, move, verify.
"""

__version__ = "0.1.0"

from tiering.api import Tiering, open  # noqa: E402

__all__ = ["Tiering", "__version__", "open"]
