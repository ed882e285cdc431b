"""An application's life in a forked process: ``registry`` (the applications of this process),
``kinds`` and ``hosting`` (what it can host and how), ``build`` (the one post-fork build every
server calls).

The rule: this is the top of the runtime. It may import the core, the stores, the metrics and
``uwsgi_es.runtime``; nothing below it (``application``, ``stores``, ``metrics``, ``snapshots``)
imports it. Its ``__init__`` imports nothing, so its modules import each other without a circle.
"""
