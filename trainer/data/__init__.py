"""Training data: jsonl validation, World-tokenized binidx, SFT loss masks, datasets."""
