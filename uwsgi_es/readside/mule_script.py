"""The projection mule as a script at a path inside the package, the form inis used before the
``uwsgi-es-mule.py`` console script (``mule = %b-es-mule.py``, see ``uwsgi_es.readside.mule``):

    mule = /path/to/site-packages/uwsgi_es/readside/mule_script.py

Kept so such inis go on working. uWSGI executes it in the mule; never import it.
"""

from uwsgi_es.readside.mule import main

main()
