"""Traces: the typed steps the engine records, their compact stored form and expanded read
form, and their rendering as text."""
