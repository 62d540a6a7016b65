"""The node agent (``dra-driver kubelet-plugin``): registration and DRA gRPC services,
prepare/unprepare with CDI specs and a checkpoint, GPU discovery, ResourceSlice
publishing, health."""
