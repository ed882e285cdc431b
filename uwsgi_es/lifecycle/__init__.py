"""An application's life in a forked process: ``process`` (what uWSGI says this process is),
``registry`` (the applications of this process), ``kinds`` and ``hosting`` (what it can host and
how), ``build`` (the one post-fork build every server calls), ``events`` (its structured log).

This package's ``__init__`` imports nothing, so its modules can import each other's siblings
without an import circle through it.
"""
