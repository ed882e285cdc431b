"""The projection mule as a script, the form every uwsgi_es ini uses:

    mule = %duwsgi_es/readside/mule_script.py      (the path of this file)

uWSGI has two ways to start a Python mule: a ``module:function`` (``uwsgi_es.readside.mule:run``)
or a script. Under ``lazy-apps`` the first segfaults before any Python runs, at every respawn
(unbit/uwsgi#1746: the master never set the Python loaders up), so this script runs the same
``run()`` in both modes. uWSGI executes it in the mule; never import it.
"""

import os

try:
    from uwsgi_es.readside.mule import run

    run()
except KeyboardInterrupt:  # uWSGI stops the instance (SIGINT) while this mule starts or runs
    os._exit(0)
