"""Fixed Pulumi programs the engine tests copy into a project as ``__main__.py``.

A program reads what varies from data (``spec.json`` beside it, Pulumi config), never from
text spliced into its source.
"""
