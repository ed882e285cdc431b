"""Leaves every floor may use: ``process`` (what uWSGI says this process is: worker or mule id,
counts, lazy-apps), ``fork`` (the one fork guard) and ``log`` (the structured log every part writes
to).

The rule: nothing here imports the rest of the package at import time but ``errors``, itself a leaf
(``log`` reads the settings inside a function, when logging is configured), so a store, the core
and the web layer may all ask these modules without an arrow running back up. Nothing here
connects to anything.
"""
