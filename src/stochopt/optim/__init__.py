"""The update rules, one small class each, the registry that names them, and the
learning-rate schedules.

    base.py        what every rule shares: declared settings, ``init``/``step``, fused kernels
    registry.py    RULES by name, ``@register``, ``make_optimizer``, the docs' table
    schedules.py   the factor that multiplies the base learning rate over the epochs
    sgd.py, adaptive.py, adam.py, sign.py, schedulefree.py, dadapt.py, linesearch.py,
    muon.py        the rules, by family
    adopt.py, ademamix.py, mars.py   a rule each, a family of its own
    kronecker.py   what the Kronecker-factored rules share (one model's matrix, the models)
    shampoo.py     Shampoo: the gradient times inverse fourth roots of its two factors
    soap.py        SOAP: Adam in the eigenbasis of Shampoo's preconditioner
    kron.py        PSGD Kron: triangular Kronecker factors fitted to whiten the gradient

A rule lives in the file of its family and is added with ``@register``; nothing else needs
to know about it: the command line's flags, validation, ``results.csv`` columns and the
docs' table are read off the registry. See CONTRIBUTING.md for adding one.
"""

from __future__ import annotations

# each family registers its rules; this order is the registry's (and --help's) order
# isort: off
from . import sgd, adaptive, adam, sign, schedulefree, dadapt, linesearch, muon  # noqa: F401
from . import adopt, ademamix, mars, shampoo, soap, kron  # noqa: F401
# isort: on
from .base import Hyper, Rule, State
from .registry import RULES, get_rule, make_optimizer, markdown_table, register

__all__ = ["RULES", "Hyper", "Rule", "State", "get_rule", "make_optimizer", "markdown_table",
           "register"]
