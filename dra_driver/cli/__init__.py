"""The ``dra-driver`` and ``kubectl-dra`` command lines."""
