"""The machinery every room uses: atomic files and checked loads (io), one process per run folder
(runlock), devices and mixed precision (devices), and how progress shows (console)."""
