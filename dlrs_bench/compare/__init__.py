"""Comparisons: reference tables, scaling-law fits."""
