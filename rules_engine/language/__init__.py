"""The rule language: the expression sandbox and its compiler, what each trigger's conditions
can read (the context), condition trees, templates, URL templates and business hours."""
