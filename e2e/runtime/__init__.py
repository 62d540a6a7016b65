"""Container runtimes for the tests: rootful podman with all its state in one private
directory (``podman_state``), made usable on this kind of machine by ``ensure_podman.sh``."""
