"""Training data: the one record reader (records), jsonl validation, the one tokenize-and-mask
pipeline (tokenize), World-tokenized binidx, SFT loss masks, datasets."""
