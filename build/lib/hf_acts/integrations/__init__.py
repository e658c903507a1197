"""Thin bridges from the hf-acts registry into timm and transformers."""
