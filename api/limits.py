"""Limits and well-known names of the resource.k8s.io/v1 API (Kubernetes 1.36).

Every number here is a limit the API server enforces on create/update (see
``api.validation``) or a constant the scheduler's allocator relies on. The
values follow the upstream API types; where 1.34 differed, the comment says so.
Nothing in this module may change at run time.
"""

from __future__ import annotations

from typing import Final

# --- API group and kinds --------------------------------------------------------

GROUP: Final = "resource.k8s.io"
API_VERSION: Final = "resource.k8s.io/v1"
CORE_API_VERSION: Final = "v1"

KIND_DEVICE_CLASS: Final = "DeviceClass"
KIND_RESOURCE_CLAIM: Final = "ResourceClaim"
KIND_RESOURCE_CLAIM_TEMPLATE: Final = "ResourceClaimTemplate"
KIND_RESOURCE_SLICE: Final = "ResourceSlice"
KIND_DEVICE_TAINT_RULE: Final = "DeviceTaintRule"
KIND_NODE: Final = "Node"
KIND_POD: Final = "Pod"

# --- Integers ---------------------------------------------------------------------

#: The range of an int64, the type of every integer field of these kinds (and of CEL's int).
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# --- Standard names ---------------------------------------------------------------

#: Domain of the standard device attributes (pciBusID, pcieRoot, numaNode).
STANDARD_DOMAIN: Final = "resource.kubernetes.io"
#: Standard attribute: PCI bus ID in lowercase extended BDF form (``0000:3b:00.0``).
ATTRIBUTE_PCI_BUS_ID: Final = "resource.kubernetes.io/pciBusID"
#: Standard attribute: PCIe root complex (``pci0000:00``).
ATTRIBUTE_PCIE_ROOT: Final = "resource.kubernetes.io/pcieRoot"
#: Standard attribute from Kubernetes 1.37 on: NUMA node of the device.
ATTRIBUTE_NUMA_NODE: Final = "resource.kubernetes.io/numaNode"
#: The driver's attribute (unqualified, in its own domain) naming a GPU's NVLink
#: island: published by discovery, ranked on by the ``topology`` policy.
ATTRIBUTE_NVLINK_ISLAND: Final = "nvlinkIsland"
#: Regular expression a ``pciBusID`` attribute value matches.
PCI_BUS_ID_PATTERN: Final = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$"

#: Namespace label (value ``"true"``) that allows ``adminAccess`` requests.
ADMIN_ACCESS_NAMESPACE_LABEL: Final = "resource.kubernetes.io/admin-access"
#: Annotation the claim controller puts on claims made from a template.
POD_CLAIM_NAME_ANNOTATION: Final = "resource.kubernetes.io/pod-claim-name"
#: Annotation marking a claim made for extended resources.
EXTENDED_RESOURCE_CLAIM_ANNOTATION: Final = "resource.kubernetes.io/extended-resource-claim"
#: Finalizer the scheduler and the claim controller set on claims.
DELETE_PROTECTION_FINALIZER: Final = "resource.kubernetes.io/delete-protection"
#: Prefix of the implicit extended resource name of a DeviceClass.
IMPLICIT_EXTENDED_RESOURCE_PREFIX: Final = "deviceclass.resource.kubernetes.io/"

# --- Enumerations -------------------------------------------------------------------

ALLOCATION_MODE_EXACT_COUNT: Final = "ExactCount"
ALLOCATION_MODE_ALL: Final = "All"
ALLOCATION_MODES: Final = (ALLOCATION_MODE_EXACT_COUNT, ALLOCATION_MODE_ALL)

TAINT_EFFECT_NONE: Final = "None"
TAINT_EFFECT_NO_SCHEDULE: Final = "NoSchedule"
TAINT_EFFECT_NO_EXECUTE: Final = "NoExecute"
#: Effects a DeviceTaint may carry (``PreferNoSchedule`` does not exist for devices).
TAINT_EFFECTS: Final = (TAINT_EFFECT_NONE, TAINT_EFFECT_NO_SCHEDULE, TAINT_EFFECT_NO_EXECUTE)
#: Effects a DeviceToleration may name; the empty string tolerates every effect.
TOLERATION_EFFECTS: Final = ("", TAINT_EFFECT_NO_SCHEDULE, TAINT_EFFECT_NO_EXECUTE)

TOLERATION_OPERATOR_EQUAL: Final = "Equal"
TOLERATION_OPERATOR_EXISTS: Final = "Exists"
TOLERATION_OPERATORS: Final = (TOLERATION_OPERATOR_EQUAL, TOLERATION_OPERATOR_EXISTS)

CONFIG_SOURCE_FROM_CLASS: Final = "FromClass"
CONFIG_SOURCE_FROM_CLAIM: Final = "FromClaim"
CONFIG_SOURCES: Final = (CONFIG_SOURCE_FROM_CLASS, CONFIG_SOURCE_FROM_CLAIM)

NODE_SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")

# --- Names --------------------------------------------------------------------------

DNS1123_LABEL_MAX_LENGTH: Final = 63
DNS1123_SUBDOMAIN_MAX_LENGTH: Final = 253
#: ResourceSlice.spec.driver and OpaqueDeviceConfiguration.driver.
DRIVER_NAME_MAX_LENGTH: Final = 63
POOL_NAME_MAX_LENGTH: Final = 253
#: Domain part of a qualified attribute/capacity name.
DEVICE_MAX_DOMAIN_LENGTH: Final = 63
#: C-identifier part of a qualified attribute/capacity name.
DEVICE_MAX_ID_LENGTH: Final = 32
LABEL_VALUE_MAX_LENGTH: Final = 63
#: Keys plus values of all annotations of one object (apimachinery's TotalAnnotationSizeLimitB).
TOTAL_ANNOTATION_SIZE_MAX: Final = 256 * 1024
QUALIFIED_NAME_MAX_LENGTH: Final = 63

# --- ResourceSlice ------------------------------------------------------------------

MAX_DEVICES_PER_SLICE: Final = 128
#: Lower device limit when any device uses taints, consumesCounters or list attributes.
MAX_DEVICES_PER_SLICE_WITH_ADVANCED: Final = 64
#: Counter sets per slice (1.34 allowed 32 "shared counters").
MAX_COUNTER_SETS_PER_SLICE: Final = 8
MAX_COUNTERS_PER_COUNTER_SET: Final = 32
MAX_COUNTER_CONSUMPTIONS_PER_DEVICE: Final = 2
MAX_COUNTERS_PER_CONSUMPTION: Final = 32
MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE: Final = 32
#: Scalar attribute values plus list items, per device.
MAX_ATTRIBUTE_VALUES_PER_DEVICE: Final = 48
DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH: Final = 64
#: Taints per device (1.34 allowed 4).
DEVICE_TAINTS_MAX: Final = 16
BINDING_CONDITIONS_MAX: Final = 4
BINDING_FAILURE_CONDITIONS_MAX: Final = 4
#: validValues entries of a CapacityRequestPolicy.
CAPACITY_REQUEST_POLICY_DISCRETE_MAX_OPTIONS: Final = 10

# --- DeviceClass and ResourceClaim --------------------------------------------------

DEVICE_SELECTORS_MAX: Final = 32
DEVICE_CLASS_CONFIG_MAX: Final = 32
DEVICE_REQUESTS_MAX: Final = 32
FIRST_AVAILABLE_DEVICE_REQUESTS_MAX: Final = 8
DEVICE_CONSTRAINTS_MAX: Final = 32
DEVICE_CONFIG_MAX: Final = 32
DEVICE_TOLERATIONS_MAX: Final = 16
#: Length in bytes of a CEL selector expression.
CEL_SELECTOR_EXPRESSION_MAX_LENGTH: Final = 10 * 1024
#: Estimated (compile time) and actual (run time) cost of one selector evaluation.
CEL_SELECTOR_EXPRESSION_MAX_COST: Final = 1_000_000
#: Raw size in bytes of OpaqueDeviceConfiguration.parameters.
OPAQUE_PARAMETERS_MAX_LENGTH: Final = 10 * 1024
#: Devices a claim may get in total, across all of its requests.
CLAIM_MAX_DEVICES: Final = 32

# --- ResourceClaim status -----------------------------------------------------------

ALLOCATION_RESULTS_MAX: Final = 32
#: Class configs plus claim configs in an allocation.
ALLOCATION_CONFIG_MAX: Final = 2 * DEVICE_CONFIG_MAX
RESERVED_FOR_MAX: Final = 256
ALLOCATED_DEVICE_STATUS_MAX_CONDITIONS: Final = 8
ALLOCATED_DEVICE_STATUS_DATA_MAX_LENGTH: Final = 10 * 1024
NETWORK_DEVICE_DATA_MAX_IPS: Final = 16
NETWORK_DEVICE_DATA_INTERFACE_NAME_MAX_LENGTH: Final = 256
NETWORK_DEVICE_DATA_HARDWARE_ADDRESS_MAX_LENGTH: Final = 128

# --- Reading manifests --------------------------------------------------------------

#: The API server's bound on one request body, so on one object as JSON (3 MiB). The
#: offline tools apply it to each object with its YAML aliases expanded, as kubectl sends it.
MAX_OBJECT_BYTES: Final = 3 * 1024 * 1024
#: Nesting depth of one document. The API server's decoders allow 10,000; no Kubernetes
#: object comes near 100, and the offline tools' recursive steps (JSON size of opaque
#: parameters, model validation) need the bound well under Python's recursion limit.
MAX_NESTING_DEPTH: Final = 100
#: Text read from one manifest file or stdin; many objects fit, a runaway file does not.
MAX_MANIFEST_BYTES: Final = 64 * 1024 * 1024
