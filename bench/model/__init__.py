"""The model: scales (the paper and CPU ladders) and a run's architecture and shape (scales.py), the
Llama decoder and its MLA and MoE variants (llama.py, mla.py, moe.py; build.build_model picks one),
their training FLOPs."""
