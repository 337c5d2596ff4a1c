"""The file and wire formats: YAML with source positions, the shipped JSON Schemas, schema
errors turned into messages with hints, and events parsed from JSON."""
