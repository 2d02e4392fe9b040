"""lusv: multi-label lung ultrasound video classification (LUV-Net study toolkit)."""

from lusv.patterns import DISPLAY_NAMES, PATTERNS

__version__ = "0.1.0"
__all__ = ["PATTERNS", "DISPLAY_NAMES", "__version__"]
