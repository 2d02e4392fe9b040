"""lusv: multi-label lung ultrasound video classification (LUV-Net study toolkit).

The folders, bottom up: ``infra`` (files, locks, devices), ``data`` (patterns, videos, cache,
windows, splits, sources), ``models``, ``stats``, ``inference``, ``train``, ``report``, ``explain``,
``evaluation``, ``predict``; the entry points ``study`` and ``cli`` on top (docs/architecture.md).
"""

__version__ = "0.1.0"
