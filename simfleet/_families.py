"""The aws-node metric families the fleet serves, with the label values a real node uses.

Names, HELP texts and label names follow aws-node's ``prometheusmetrics`` package and the pages in
``tests/fixtures/aws-node/``; the rates and ranges are invented but plausible. Every family of the
aggregation rule table (docs/aggregation.md) is here, so a simulated page exercises every rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "summary"]


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """One family: how it renders and, for counters, how fast ``advance()`` makes it grow.

    ``rate`` is the chance per series per step that the counter moves; it then grows by
    ``1..max_step``. ``initial`` bounds the value a node starts with (it has been running a while).
    """

    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...] = ()
    rate: float = 0.0
    max_step: int = 1
    initial: int = 0


API_LATENCY = "awscni_aws_api_latency_ms"
API_ERRORS = "awscni_aws_api_error_count"
ADD_IP_REQ = "awscni_add_ip_req_count"
ASSIGNED_IPS = "awscni_assigned_ip_addresses"
IPS_PER_CIDR = "awscni_assigned_ip_per_cidr"
ENI_ALLOCATED = "awscni_eni_allocated"
ENI_MAX = "awscni_eni_max"
IP_MAX = "awscni_ip_max"
TOTAL_IPS = "awscni_total_ip_addresses"
TOTAL_PREFIXES = "awscni_total_ipv4_prefixes"
ACTIONS_IN_PROGRESS = "awscni_ipamd_action_inprogress"
EC2_REQS = "awscni_ec2api_req_count"
EC2_ERRORS = "awscni_ec2api_error_count"
UTILS_ERRORS = "awscni_aws_utils_error_count"
IPAMD_ERRORS = "awscni_ipamd_error_count"
POD_ENI_ERRORS = "awscni_pod_eni_error_count"
RECONCILES = "awscni_reconcile_count"
DEL_IP_REQ = "awscni_del_ip_req_count"

FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(ADD_IP_REQ, "The number of add IP address request", "counter",
               rate=0.6, max_step=4, initial=500),
    FamilySpec(ASSIGNED_IPS, "The number of IP addresses assigned to pods", "gauge"),
    FamilySpec(IPS_PER_CIDR, "The total number of IP addresses assigned per cidr", "gauge",
               ("cidr",)),
    FamilySpec(API_ERRORS, "The number of times AWS API returns an error", "counter",
               ("api", "error"), rate=0.1, max_step=2, initial=20),
    FamilySpec(API_LATENCY, "AWS API call latency in ms", "summary", ("api", "error")),
    FamilySpec(UTILS_ERRORS, "The number of errors not handled in awsutils library", "counter",
               ("error", "fn"), rate=0.05, max_step=1, initial=5),
    FamilySpec(DEL_IP_REQ, "The number of delete IP address request", "counter",
               ("reason",), rate=0.5, max_step=4, initial=400),
    FamilySpec(EC2_ERRORS, "The number of failed EC2 APIs requests", "counter",
               ("fn",), rate=0.05, max_step=1, initial=5),
    FamilySpec(EC2_REQS, "The number of requests made to EC2 APIs by CNI", "counter",
               ("fn",), rate=0.5, max_step=3, initial=50),
    FamilySpec(ENI_ALLOCATED, "The number of ENIs allocated", "gauge"),
    FamilySpec(ENI_MAX, "The maximum number of ENIs that can be attached to the instance",
               "gauge"),
    FamilySpec("awscni_force_removed_enis",
               "The number of ENIs force removed while they had assigned pods", "counter",
               rate=0.02, max_step=1, initial=2),
    FamilySpec("awscni_force_removed_ips",
               "The number of IPs force removed while they had assigned pods", "counter",
               rate=0.03, max_step=2, initial=3),
    FamilySpec(IP_MAX, "The maximum number of IP addresses that can be allocated to the instance",
               "gauge"),
    FamilySpec(ACTIONS_IN_PROGRESS, "The number of ipamd actions in progress", "gauge", ("fn",)),
    FamilySpec(IPAMD_ERRORS, "The number of errors encountered in ipamd", "counter",
               ("fn",), rate=0.05, max_step=1, initial=5),
    FamilySpec(POD_ENI_ERRORS, "The number of errors encountered for pod ENIs", "counter",
               ("fn",), rate=0.03, max_step=1, initial=3),
    FamilySpec(RECONCILES,
               "The number of times ipamd reconciles on ENIs and IP/Prefix addresses", "counter",
               ("fn",), rate=0.7, max_step=3, initial=1000),
    FamilySpec(TOTAL_IPS, "The total number of IP addresses", "gauge"),
    FamilySpec(TOTAL_PREFIXES, "The total number of IPv4 prefixes", "gauge"),
)

FAMILY_BY_NAME: dict[str, FamilySpec] = {spec.name: spec for spec in FAMILIES}

EC2_APIS = (
    "AssignPrivateIpAddresses",
    "AttachNetworkInterface",
    "CreateNetworkInterface",
    "DeleteNetworkInterface",
    "DescribeInstances",
    "DescribeNetworkInterfaces",
    "DetachNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
)
LATENCY_APIS = (*EC2_APIS[:3], "CreateTags", *EC2_APIS[3:], "GetMetadata")
EXTRA_APIS = ("UnassignPrivateIpAddresses", "DescribeSubnets", "CreateTags")
API_ERROR_CODES = (
    "InvalidParameterValue",
    "RequestLimitExceeded",
    "UnauthorizedOperation",
    "InsufficientFreeAddressesInSubnet",
    "InvalidNetworkInterfaceID.NotFound",
    "ServiceUnavailable",
)
UTILS_FNS = ("AllocENI", "FreeENI", "GetAttachedENIs", "AllocIPAddresses", "DeallocIPAddresses")
IPAMD_FNS = (
    "nodeInitAssignIPs",
    "increaseIPPoolAllocIPAddressesFailed",
    "decreaseIPPoolFreeIPsFailed",
    "eniReconcileDel",
    "ipReconcileDel",
)
POD_ENI_FNS = ("CreateBranchENI", "AttachBranchENI", "DeleteBranchENI")
RECONCILE_FNS = (
    "eniReconcileAdd",
    "eniReconcileDel",
    "eniIPPoolReconcileAdd",
    "eniIPPoolReconcileDel",
    "eniDataStorePoolReconcileAdd",
)
ACTION_FNS = ("decreaseIPPool", "increaseIPPool", "nodeIPPoolReconcile", "nodeInit",
              "retryAllocENIIP")
DEL_REASONS = ("PodDeleted", "SetupNSFailed")
