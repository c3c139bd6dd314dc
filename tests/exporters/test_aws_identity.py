"""Region and cluster-ID discovery (exporters._aws_identity) against loopback IMDSv2 and moto."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from exporters._aws_identity import (
    DEFAULT_CLUSTER_ID,
    ImdsClient,
    ImdsError,
    cluster_id_from_tags,
    resolve_cluster_id,
    resolve_region,
)
from tests.support.imds import ImdsServer
from tests.support.moto_server import Moto, aws_test_env, running_moto


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    aws_test_env(monkeypatch)
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with running_moto() as server:
        yield server


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImdsServer]:
    with ImdsServer(region="eu-central-1") as server:
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.endpoint)
        yield server


#: One of moto's built-in AMIs (listing them all takes seconds; moto does not insist anyway).
IMAGE_ID = "ami-03cf127a"


def tagged_instance(moto: Moto, tags: dict[str, str]) -> str:
    ec2 = moto.client("ec2")
    instance = ec2.run_instances(ImageId=IMAGE_ID, MinCount=1, MaxCount=1,
                                 InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    if tags:
        ec2.create_tags(Resources=[instance],
                        Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return str(instance)


# -- region -----------------------------------------------------------------------------------


def test_configured_region_wins(imds: ImdsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert resolve_region(" us-east-2 ") == "us-east-2"
    assert imds.requests == []


def test_region_from_environment(imds: ImdsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert resolve_region("") == "ap-south-1"
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    assert resolve_region("") == "sa-east-1"
    assert imds.requests == []


def test_region_from_imdsv2(imds: ImdsServer) -> None:
    assert resolve_region("") == "eu-central-1"
    assert imds.requests[0] == ("PUT", "/latest/api/token")
    assert ("GET", "/latest/meta-data/placement/region") in imds.requests


def test_region_falls_back_to_identity_document(imds: ImdsServer) -> None:
    del imds.paths["/latest/meta-data/placement/region"]
    assert resolve_region("") == "eu-central-1"


def test_imds_refuses_gets_without_a_token(imds: ImdsServer) -> None:
    client = ImdsClient(endpoint=imds.endpoint)
    client._token = "forged"
    with pytest.raises(ImdsError, match="401"):
        client.get("latest/meta-data/instance-id")


def test_disabled_imds_is_never_asked(imds: ImdsServer, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "TRUE")
    with caplog.at_level(logging.INFO):
        assert resolve_region("") == ""
    assert imds.requests == []
    assert "IMDS is disabled" in caplog.text


def test_failing_imds_is_logged_and_gives_no_region(
    imds: ImdsServer, caplog: pytest.LogCaptureFixture
) -> None:
    imds.fail_with = 500
    with caplog.at_level(logging.WARNING):
        assert resolve_region("") == ""
    assert "IMDS failed" in caplog.text
    assert len(imds.requests) == 2  # two attempts at the token on a 5xx, then give up


def test_silent_imds_times_out_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    # A socket that accepts connections (backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{port}")
        started = time.monotonic()
        assert resolve_region("") == ""
        assert time.monotonic() - started < 10  # 1s timeout x 2 attempts, generous margin


def test_imds_endpoint_follows_botocore_variables() -> None:
    assert ImdsClient.from_environ({"AWS_EC2_METADATA_DISABLED": "true"}) is None
    default = ImdsClient.from_environ({})
    assert default is not None and default.endpoint == "http://169.254.169.254/"
    ipv6 = ImdsClient.from_environ({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"})
    assert ipv6 is not None and ipv6.endpoint == "http://[fd00:ec2::254]/"
    custom = ImdsClient.from_environ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.9:81"})
    assert custom is not None and custom.endpoint == "http://127.0.0.9:81/"


# -- cluster ID -------------------------------------------------------------------------------


def test_configured_and_env_cluster_id_win(imds: ImdsServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CLUSTER_ID", "from-env")
    assert resolve_cluster_id("from-config", region="us-west-2") == "from-config"
    assert resolve_cluster_id("", region="us-west-2") == "from-env"
    assert imds.requests == []


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"eks:cluster-name": "eks-prod", "CLUSTER_ID": "legacy", "Name": "node-1"}, "eks-prod"),
        ({"CLUSTER_ID": "legacy", "Name": "node-1"}, "legacy"),
        ({"Name": "node-1", "team": "net"}, "node-1"),
        ({"team": "net"}, DEFAULT_CLUSTER_ID),
    ],
    ids=["eks-tag", "cluster-id-tag", "name-tag", "no-tag"],
)
def test_cluster_id_from_this_instances_tags(
    moto: Moto, imds: ImdsServer, monkeypatch: pytest.MonkeyPatch,
    tags: dict[str, str], expected: str,
) -> None:
    imds.paths["/latest/meta-data/instance-id"] = tagged_instance(moto, tags)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", moto.endpoint)
    assert resolve_cluster_id("", region=moto.region) == expected


def test_tags_of_other_instances_are_ignored(
    moto: Moto, imds: ImdsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tagged_instance(moto, {"eks:cluster-name": "someone-else"})
    imds.paths["/latest/meta-data/instance-id"] = tagged_instance(moto, {"Name": "mine"})
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", moto.endpoint)
    assert resolve_cluster_id("", region=moto.region) == "mine"


def test_unreachable_ec2_falls_through_to_default(
    imds: ImdsServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", f"http://127.0.0.1:{port}")
        with caplog.at_level(logging.WARNING):
            assert resolve_cluster_id("", region="us-west-2") == DEFAULT_CLUSTER_ID
    assert "ec2:DescribeTags" in caplog.text


def test_disabled_imds_gives_default_cluster_id(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def ec2_client(region: str) -> object:
        calls.append(region)
        raise AssertionError("EC2 must not be asked without an instance ID")

    assert resolve_cluster_id("", region="us-west-2", ec2_client=ec2_client) == "k8s-cluster"
    assert calls == []


def test_no_region_means_no_tag_lookup(imds: ImdsServer,
                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert resolve_cluster_id("", region="") == DEFAULT_CLUSTER_ID
    assert "no region known" in caplog.text


def test_cluster_id_from_tags_prefers_eks_then_cluster_id_then_name() -> None:
    assert cluster_id_from_tags({"Name": "n", "CLUSTER_ID": "c"}) == "c"
    assert cluster_id_from_tags({"Name": "n", "eks:cluster-name": " e "}) == "e"
    assert cluster_id_from_tags({"Name": "  ", "CLUSTER_ID": ""}) == ""
