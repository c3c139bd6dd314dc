"""``aws_subnets`` receiver: the IP capacity of the subnets the cluster uses (EC2)."""

from .config import AwsSubnetsConfig
from .factory import AwsSubnetsReceiverFactory, factory
from .receiver import AwsSubnetsReceiver

__all__ = ["AwsSubnetsConfig", "AwsSubnetsReceiver", "AwsSubnetsReceiverFactory", "factory"]
