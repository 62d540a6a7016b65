"""End-to-end material outside the installed driver: the local Kubernetes cluster the cluster
tests run on (``e2e.cluster``), ``make demo`` (``e2e.demo``), the check for a real GPU machine
(``e2e.gpu``), rootful podman for the runtime tests (``e2e.runtime``), and kind (``e2e/kind``)."""
