"""Tuning protocols: what a cell trains next, given the losses so far."""
