"""Helpers the tests import (fixtures stay in conftest.py files): ``paths`` (the project's files),
``checks`` (driving a real server and proving one application per worker), ``load`` (continuous
write load and its audit), ``forking`` (run code in a forked child), ``reliability_report``."""
