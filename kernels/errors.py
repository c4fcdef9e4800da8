"""Errors the WKV ops raise, in a module of their own so every op can import them."""


class KernelUnavailableError(Exception):
    """The requested op cannot run here (no GPU, package or compiler missing, unsupported dtype…)."""
