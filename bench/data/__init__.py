"""Data: documents from files, packages or the hub (corpus), tokenizers, tokenized splits and batches."""
