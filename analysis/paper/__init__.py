"""The study's published results (data/) and their reproduction (`optbench reproduce`)."""
