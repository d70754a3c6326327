"""The performance benchmark (`optbench bench`): throughput, ceilings, optimizer overheads, goals.

It imports bench and sweeps and is imported by neither."""
