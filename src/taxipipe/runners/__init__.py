"""Runners: each decides when and where the pipeline's steps run, never what they do."""
