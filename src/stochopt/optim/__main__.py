"""``python -m stochopt.optim`` prints the docs' table of optimisers, from the registry."""

from .registry import markdown_table

print(markdown_table(), end="")
