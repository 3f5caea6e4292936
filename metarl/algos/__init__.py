"""Outer-loop optimisers."""
