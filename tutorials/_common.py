"""Shared by the tutorials: the fast mode the test suite runs them in."""

import os

#: ``TVM_SPARSE_TUTORIAL_FAST=1`` shrinks the models so the test suite can run every tutorial quickly.
FAST = os.environ.get("TVM_SPARSE_TUTORIAL_FAST") == "1"
