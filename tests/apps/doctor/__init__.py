"""Small applications broken on purpose, each in the way one check of ``uwsgi-es doctor`` finds,
and the inis that launch them (the inis take their address from DOCTOR_APP_HTTP)."""
