"""Upstream-style resource.k8s.io/v1 documents the :mod:`api.resource_v1` tests decode.

Each kind the driver reads, written as the API server and NVIDIA's driver write them (YAML
text, so that the round trip also covers what PyYAML makes of it), and :func:`load` /
:func:`slice_data` to read one.
"""

from __future__ import annotations

from typing import Any

import yaml

# A GPU slice in the style of NVIDIA's driver on Kubernetes 1.35+: the devices
# consume counters of a counters-only slice in the same pool.
GPU_SLICE = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata:
  name: node-a-gpu.nvidia.com-7xq2k
  uid: 5f0e8c0a-1c1d-4d4b-9d7e-3f2f0b8b9a01
  resourceVersion: "81234"
  creationTimestamp: "2025-06-01T10:00:00Z"
  generateName: node-a-gpu.nvidia.com-
  ownerReferences:
  - apiVersion: v1
    kind: Node
    name: node-a
    uid: 0b6b1a8e-7f5e-4e4a-8a7b-2c1d3e4f5a6b
    controller: true
spec:
  driver: gpu.nvidia.com
  nodeName: node-a
  pool:
    name: node-a
    generation: 3
    resourceSliceCount: 2
  devices:
  - name: gpu-0
    attributes:
      architecture: {string: Hopper}
      brand: {string: Nvidia}
      cudaComputeCapability: {version: 9.0.0}
      cudaDriverVersion: {version: 12.4.0}
      driverVersion: {version: 550.54.15}
      index: {int: 0}
      minor: {int: 0}
      productName: {string: NVIDIA H100 80GB HBM3}
      type: {string: gpu}
      uuid: {string: GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c}
      resource.kubernetes.io/pciBusID: {string: "0000:3b:00.0"}
      resource.kubernetes.io/pcieRoot: {string: pci0000:3a}
      addressingMode: {string: HMM}
      mig: {bool: false}
    capacity:
      memory: {value: 80Gi}
      multiprocessors: {value: "132"}
    consumesCounters:
    - counterSet: gpu-0-counter-set
      counters:
        memory: {value: 80Gi}
        multiprocessors: {value: "132"}
        memory-slice-0: {value: "1"}
  - name: gpu-0-mig-1g10gb-0
    attributes:
      type: {string: mig}
      profile: {string: 1g.10gb}
      parentIndex: {int: 0}
    capacity:
      memory: {value: 10Gi}
    consumesCounters:
    - counterSet: gpu-0-counter-set
      counters:
        memory: {value: 10Gi}
        memory-slice-0: {value: "1"}
    taints:
    - key: gpu.nvidia.com/unhealthy
      value: xid-79
      effect: NoSchedule
      timeAdded: "2025-06-01T10:05:00Z"
"""

COUNTER_SLICE = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata:
  name: node-a-gpu.nvidia.com-counters
spec:
  driver: gpu.nvidia.com
  nodeName: node-a
  pool: {name: node-a, generation: 3, resourceSliceCount: 2}
  sharedCounters:
  - name: gpu-0-counter-set
    counters:
      memory: {value: 80Gi}
      multiprocessors: {value: "132"}
      memory-slice-0: {value: "1"}
"""

SHARED_SLICE = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: shared-gpu}
spec:
  driver: gpu.example.com
  allNodes: true
  pool: {name: cluster/shared, generation: 0, resourceSliceCount: 1}
  devices:
  - name: gpu-0
    allowMultipleAllocations: true
    bindsToNode: true
    bindingConditions: [example.com/attached]
    bindingFailureConditions: [example.com/attach-failed]
    capacity:
      memory:
        value: 80Gi
        requestPolicy:
          default: 10Gi
          validRange: {min: 10Gi, step: 10Gi}
      compute:
        value: "100"
        requestPolicy:
          default: "10"
          validValues: ["10", "50", "100"]
"""

CLASS = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.nvidia.com}
spec:
  extendedResourceName: nvidia.com/gpu
  selectors:
  - cel:
      expression: >-
        device.driver == 'gpu.nvidia.com' &&
        device.attributes['gpu.nvidia.com'].type == 'gpu'
  config:
  - opaque:
      driver: gpu.nvidia.com
      parameters:
        apiVersion: resource.nvidia.com/v1beta1
        kind: GpuConfig
        sharing: {strategy: TimeSlicing, timeSlicingConfig: {interval: Long}}
"""

CLAIM = """
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata:
  name: train-0
  namespace: default
  annotations: {resource.kubernetes.io/pod-claim-name: gpus}
spec:
  devices:
    requests:
    - name: gpu
      firstAvailable:
      - name: big
        deviceClassName: gpu.nvidia.com
        count: 2
        selectors:
        - cel:
            expression: device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0
      - name: small
        deviceClassName: mig.nvidia.com
        allocationMode: ExactCount
        count: 1
        tolerations:
        - {key: gpu.nvidia.com/unhealthy, operator: Exists, effect: NoSchedule}
    - name: nic
      exactly:
        deviceClassName: nic.example.com
        allocationMode: All
        adminAccess: true
        capacity:
          requests: {bandwidth: 10G}
    constraints:
    - requests: [gpu, nic]
      matchAttribute: resource.kubernetes.io/pcieRoot
    config:
    - requests: [gpu/small]
      opaque:
        driver: gpu.nvidia.com
        parameters: {apiVersion: resource.nvidia.com/v1beta1, kind: MigDeviceConfig}
status:
  allocation:
    allocationTimestamp: "2025-06-01T11:00:00Z"
    devices:
      results:
      - request: gpu/small
        driver: gpu.nvidia.com
        pool: node-a
        device: gpu-0-mig-1g10gb-0
        tolerations:
        - {key: gpu.nvidia.com/unhealthy, operator: Exists, effect: NoSchedule}
      - request: nic
        driver: gpu.example.com
        pool: cluster/shared
        device: gpu-0
        adminAccess: true
        shareID: 6ba7b810-9dad-11d1-80b4-00c04fd430c8
        consumedCapacity: {memory: 10Gi, compute: "10"}
        bindingConditions: [example.com/attached]
        bindingFailureConditions: [example.com/attach-failed]
      config:
      - source: FromClass
        requests: [gpu/small]
        opaque:
          driver: gpu.nvidia.com
          parameters: {apiVersion: resource.nvidia.com/v1beta1, kind: GpuConfig}
      - source: FromClaim
        requests: [gpu/small]
        opaque:
          driver: gpu.nvidia.com
          parameters: {apiVersion: resource.nvidia.com/v1beta1, kind: MigDeviceConfig}
    nodeSelector:
      nodeSelectorTerms:
      - matchFields:
        - {key: metadata.name, operator: In, values: [node-a]}
  reservedFor:
  - {resource: pods, name: train-0, uid: 9e1c2b3a-0000-4000-8000-000000000001}
  devices:
  - driver: gpu.nvidia.com
    pool: node-a
    device: gpu-0-mig-1g10gb-0
    conditions:
    - type: Ready
      status: "True"
      reason: Prepared
      message: ""
      lastTransitionTime: "2025-06-01T11:00:05Z"
    data: {migUUID: MIG-1234}
    networkData: {interfaceName: eth1, ips: [192.0.2.5/24], hardwareAddress: "00:11:22:33:44:55"}
"""

TEMPLATE = """
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: one-gpu, namespace: team-a}
spec:
  metadata:
    labels: {app: trainer}
  spec:
    devices:
      requests:
      - name: gpu
        exactly: {deviceClassName: gpu.nvidia.com}
"""

NODE = """
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {kubernetes.io/hostname: node-a, nvidia.com/gpu.present: "true"}
spec:
  podCIDR: 10.244.1.0/24
  taints:
  - {key: node-role.kubernetes.io/control-plane, effect: NoSchedule}
status:
  capacity: {cpu: "16", memory: 131072Mi}
  allocatable: {cpu: "15500m", memory: 129024Mi}
  nodeInfo: {kubeletVersion: v1.36.3}
"""

ALL_DOCS = [GPU_SLICE, COUNTER_SLICE, SHARED_SLICE, CLASS, CLAIM, TEMPLATE, NODE]


def load(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def slice_data() -> dict[str, Any]:
    return load(GPU_SLICE)
