"""Preparation commands: each turns one raw public release into the folder layout the datasets
read (``python -m datasets.prepare.<name> --raw DIR --root ROOT``); see datasets/README.md."""
