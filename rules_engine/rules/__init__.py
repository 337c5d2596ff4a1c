"""Rules: ``Rule`` and ``RuleSet``, the action registry, the loader (files to compiled
rules) and the static analysis of a rule set."""
