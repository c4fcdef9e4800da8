"""Models in: the shipped catalogue of official RWKV-7 checkpoints and the downloader."""
