"""``uwsgi-es doctor INI``: boots an ini under real uWSGI and reports what breaks under forking
servers, with the fix for each.

- ``examination``: boot, wait for every worker, stop, and the report;
- ``probe``: what runs inside uWSGI (an audit hook in the master, a look from each worker);
- ``sockets``: a process's sockets and threads, read from /proc;
- ``findings``: the rules (shared connections, threads and applications in the master, risky options);
- ``budget``: the database pools against PostgreSQL's ``max_connections``.
"""
