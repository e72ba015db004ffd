"""bsq_tokenizer."""
