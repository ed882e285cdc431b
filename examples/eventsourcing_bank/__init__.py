"""The bank example written with the eventsourcing library (9.5), deployed by uwsgi_es:
``uwsgi --ini deploy/uwsgi-eventsourcing.ini`` serves it on the library's persistence module of
your choice (``PERSISTENCE_MODULE``), one application per worker, built after the fork."""
