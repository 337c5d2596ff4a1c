"""Tests of the traces: their declared shapes, stored and read."""
