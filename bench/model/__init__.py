"""The model: scales (the paper and CPU ladders), the Llama decoder, its training FLOPs."""
