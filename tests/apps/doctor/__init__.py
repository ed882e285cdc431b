"""Small applications broken on purpose, each in the way one check of ``uwsgi-es doctor`` finds,
and the inis that launch them (on 127.0.0.1:0: a port the kernel picks, free by construction)."""
