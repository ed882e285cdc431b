"""``uwsgi-es doctor INI``: boots an ini under real uWSGI (or ``-- COMMAND``, another server's
command line) and reports what breaks under forking servers, with the fix for each.

- ``examination``: boot, wait for every worker (and watch the mules), stop, and the report;
- ``probe``: what runs inside uWSGI (an audit hook in the master, a look from each worker);
- ``server_probe``: the same eyes inside another server (granian, gunicorn, uvicorn), for
  ``uwsgi-es doctor -- COMMAND``;
- ``sockets``: a process's sockets and threads, read from /proc;
- ``observed``: what was seen (the probe's records, uWSGI's log) and the shape of a finding;
- ``findings``: the rules on what the master made before the fork (shared connections, threads,
  applications), and ``diagnose``, which runs every rule;
- ``options``: risky options, the fork option fatal on Python 3.13, ``$(VAR)`` left unset;
- ``mules``: fork hooks beside a mule, mules that cannot start or die during the boot;
- ``logs``: what uWSGI's log says (crashes, an address in use);
- ``budget``: the database pools against PostgreSQL's ``max_connections``.

The rule: near the top, it imports ``servers.uwsgi_ini``, ``runtime`` and the leaves; only the
``probe`` runs inside uWSGI, and it only looks (it builds nothing, opens no database connection of
its own in the master).
"""
