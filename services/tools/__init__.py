"""Tools stage: a registry of tools with JSON-schema arguments, executed with deadlines."""
