"""Tests of the rule language: the expression sandbox, its compiler, templates, business hours."""
