"""miniature: does a compressed model still behave like the large model it replaces?

The package is a pytest plugin (``miniature.plugin``) plus a library of pure functions
for the paper's four characteristics. Importing it is cheap: torch and transformers are
only imported by the modules that need them.
"""

__version__ = "0.1.0"
