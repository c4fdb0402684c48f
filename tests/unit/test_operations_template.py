"""Operations in template.yaml: each dead-lettered message notifies the admins, even while older ones are
still parked, and the alerts topic has an email subscription when the deploy names an admin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from localcloud.provision import Stack, provision
from mock_provider.registry import service_parameters

REGION = "us-east-1"


def dead_letter_queues(template: dict[str, Any]) -> set[str]:
    """Every queue another queue's redrive policy parks messages in."""
    return {
        resource["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in resource.get("Properties", {})
    }


def alarms_on(template: dict[str, Any], queue: str) -> list[dict[str, Any]]:
    def watches(properties: dict[str, Any]) -> bool:
        stats = [query["MetricStat"]["Metric"] for query in properties.get("Metrics", []) if "MetricStat" in query]
        metrics = [*stats, properties] if "MetricName" in properties else stats
        return any(
            {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}} in m["Dimensions"] for m in metrics
        )

    return [
        resource["Properties"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::CloudWatch::Alarm" and watches(resource["Properties"])
    ]


def test_every_dead_letter_queue_alarms_on_each_new_arrival_not_on_its_depth(template: dict[str, Any]) -> None:
    queues = dead_letter_queues(template)
    assert queues == {"FetchDLQ", "PlanDLQ", "DeliveryDLQ"}
    for queue in queues:
        (alarm,) = alarms_on(template, queue)
        # Not the depth (in ALARM as long as one old message stays, so a second incident is silent), and
        # not NumberOfMessagesSent (SQS's moves after maxReceiveCount do not count as sent).
        assert "MetricName" not in alarm
        queries = {query["Id"]: query for query in alarm["Metrics"]}
        (returned,) = [query for query in queries.values() if query.get("ReturnData", True)]
        stat = queries["visible"]["MetricStat"]
        assert stat["Metric"]["Namespace"] == "AWS/SQS"
        assert stat["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert (stat["Stat"], stat["Period"]) == ("Maximum", 60)
        # The increase from one minute to the next; an unreported (inactive, empty) queue counts as 0, so
        # the first message after a quiet spell is an increase too.
        assert returned["Expression"] == "DIFF(FILL(visible, 0))"
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (1, 1)
        assert alarm["AlarmActions"] == [{"Ref": "AdminAlerts"}]
        # Back to OK the next quiet minute, silently: that says nothing about the messages still parked.
        assert "OKActions" not in alarm


def test_the_admin_email_subscribes_to_the_alerts_topic_only_when_given(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["AdminEmail"]
    assert parameter["Default"] == ""
    assert template["Conditions"]["HasAdminEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AdminEmail"}, ""]}]}
    (subscription,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"]
    assert subscription["Condition"] == "HasAdminEmail"
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "AdminAlerts"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AdminEmail"},
    }


@pytest.fixture
def provisioned(template: dict[str, Any]) -> Iterator[Any]:
    def stack_with(**parameters: str) -> Stack:
        sandbox = service_parameters("http://127.0.0.1:1", public_base_url="http://127.0.0.1:2")
        return provision(
            template,
            lambda service: boto3.client(service, region_name=REGION),  # type: ignore[call-overload]
            REGION,
            "ops",
            {**sandbox, **parameters},
        )

    with mock_aws():
        yield stack_with


def email_subscribers(stack: Stack) -> list[str]:
    topic = stack.refs["AdminAlerts"]
    answer = boto3.client("sns", region_name=REGION).list_subscriptions_by_topic(TopicArn=topic)
    return [s["Endpoint"] for s in answer["Subscriptions"] if s["Protocol"] == "email"]


def test_the_local_cloud_creates_the_subscription_as_cloudformation_would(provisioned: Any) -> None:
    assert email_subscribers(provisioned()) == []
    stack = provisioned(AdminEmail="ops@example.com")
    assert email_subscribers(stack) == ["ops@example.com"]
    assert "AdminAlertsEmail" in stack.refs
    alarm = boto3.client("cloudwatch", region_name=REGION).describe_alarms(AlarmNames=["ops-FetchDLQAlarm"])
    (created,) = alarm["MetricAlarms"]
    assert [query["Id"] for query in created["Metrics"]] == ["visible", "arrived"]
