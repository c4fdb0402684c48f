"""Creates the template's resources in moto (or any AWS endpoint) and resolves function environments.

moto's CloudFormation lacks Secrets Manager secrets and CloudWatch alarms, so the plain CloudFormation
resources of ``template.yaml`` are created here one by one with boto3, resolving ``Ref``,
``Fn::GetAtt`` and ``Fn::Sub`` the way CloudFormation does. A resource type the template starts using
without a creator here fails loudly, so the local cloud can never silently drift from the template.
Creation is idempotent: running it again against the same endpoint reuses what is there.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localcloud.template import infrastructure

ACCOUNT_ID = "123456789012"
_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


@dataclass
class Stack:
    """What provisioning created: per logical id, its ``Ref`` value and its ``GetAtt`` attributes."""

    name: str
    region: str
    parameters: dict[str, str]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        """Resolves intrinsic functions in ``value`` against this stack."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(argument)
            if key == "Fn::GetAtt":
                logical_id, attribute = argument
                return self.attributes[logical_id][attribute]
            if key == "Fn::Sub":
                return _SUB_VARIABLE.sub(lambda match: str(self._sub_variable(match.group(1))), argument)
            if key == "Fn::Join":
                delimiter, items = argument
                parts = self.resolve(items)
                if isinstance(parts, str):
                    # A CommaDelimitedList parameter's Ref: the stack keeps its text, not the list.
                    parts = [part.strip() for part in parts.split(",")]
                return delimiter.join(str(part) for part in parts)
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub_variable(self, name: str) -> str:
        if "." in name:
            logical_id, attribute = name.split(".", 1)
            return self.attributes[logical_id][attribute]
        return self._ref(name)

    def _ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::StackName": self.name,
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"template refers to {name!r}, which is neither a parameter nor a created resource")


# Builds a boto3 client for a service at the endpoint being provisioned.
ClientFactory = Callable[[str], Any]
Creator = Callable[[ClientFactory, str, dict[str, Any], Stack], tuple[str, dict[str, str]]]


def _table(client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack) -> tuple[str, dict[str, str]]:
    client = client_for("dynamodb")
    try:
        client.describe_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        create: dict[str, Any] = {
            key: props[key]
            for key in (
                "AttributeDefinitions",
                "KeySchema",
                "GlobalSecondaryIndexes",
                "LocalSecondaryIndexes",
                "BillingMode",
            )
            if key in props
        }
        if props.get("SSESpecification", {}).get("SSEEnabled"):
            create["SSESpecification"] = {"Enabled": True}
        client.create_table(TableName=name, **create)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    arn = client.describe_table(TableName=name)["Table"]["TableArn"]
    return name, {"Arn": arn}


def _queue(client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack) -> tuple[str, dict[str, str]]:
    client = client_for("sqs")
    attributes: dict[str, str] = {
        key: str(props[key])
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")
        if key in props
    }
    if "RedrivePolicy" in props:
        redrive = props["RedrivePolicy"]
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": redrive["deadLetterTargetArn"], "maxReceiveCount": int(redrive["maxReceiveCount"])}
        )
    url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, {"Arn": arn, "QueueName": name, "QueueUrl": url}


def _topic(client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack) -> tuple[str, dict[str, str]]:
    arn = client_for("sns").create_topic(Name=name)["TopicArn"]
    return arn, {"TopicArn": arn, "TopicName": name}


def _kms_key(client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack) -> tuple[str, dict[str, str]]:
    client = client_for("kms")
    alias = f"alias/{name}"
    try:
        key = client.describe_key(KeyId=alias)["KeyMetadata"]
    except client.exceptions.NotFoundException:
        key = client.create_key(Description=props.get("Description", ""), Policy=json.dumps(props["KeyPolicy"]))[
            "KeyMetadata"
        ]
        client.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    return key["KeyId"], {"Arn": key["Arn"], "KeyId": key["KeyId"]}


def _secret(client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack) -> tuple[str, dict[str, str]]:
    client = client_for("secretsmanager")
    try:
        arn = client.describe_secret(SecretId=name)["ARN"]
    except client.exceptions.ResourceNotFoundException:
        generate = props.get("GenerateSecretString", {})
        alphabet = string.ascii_letters + string.digits
        if not generate.get("ExcludePunctuation"):
            alphabet += string.punctuation
        value = props.get("SecretString") or "".join(
            secrets.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32)))
        )
        arn = client.create_secret(Name=name, SecretString=value)["ARN"]
    return arn, {"Id": arn}


def _alarm(client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack) -> tuple[str, dict[str, str]]:
    alarm = {
        key: props[key]
        for key in (
            "AlarmDescription",
            "Metrics",
            "DatapointsToAlarm",
            "Namespace",
            "MetricName",
            "Dimensions",
            "Statistic",
            "Period",
            "EvaluationPeriods",
            "Threshold",
            "ComparisonOperator",
            "TreatMissingData",
            "AlarmActions",
            "OKActions",
        )
        if key in props
    }
    client_for("cloudwatch").put_metric_alarm(AlarmName=name, **alarm)
    return name, {"Arn": f"arn:aws:cloudwatch:{stack.region}:{ACCOUNT_ID}:alarm:{name}"}


def _subscription(
    client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack
) -> tuple[str, dict[str, str]]:
    # SNS answers an existing subscription's ARN again (an email one stays pending until confirmed).
    arn = client_for("sns").subscribe(
        TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"], ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    return arn, {"Arn": arn}


def _event_bus(client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack) -> tuple[str, dict[str, str]]:
    client = client_for("events")
    bus_name = props.get("Name", name)
    try:
        arn = client.describe_event_bus(Name=bus_name)["Arn"]
    except client.exceptions.ResourceNotFoundException:
        arn = client.create_event_bus(Name=bus_name)["EventBusArn"]
    return bus_name, {"Arn": arn, "Name": bus_name}


def _event_rule(
    client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack
) -> tuple[str, dict[str, str]]:
    # moto matches a rule without a pattern to every event (AWS refuses one): the template always gives one.
    client = client_for("events")
    bus = props.get("EventBusName", "default")
    arn = client.put_rule(
        Name=name,
        EventBusName=bus,
        EventPattern=json.dumps(props["EventPattern"]),
        State=props.get("State", "ENABLED"),
        Description=props.get("Description", ""),
    )["RuleArn"]
    targets = [
        {key: target[key] for key in ("Id", "Arn", "DeadLetterConfig", "RetryPolicy", "Input") if key in target}
        for target in props.get("Targets", [])
    ]
    if targets:
        client.put_targets(Rule=name, EventBusName=bus, Targets=targets)
    # A rule on a custom bus is named "<bus>|<rule>" where CloudFormation's Ref answers it.
    ref = name if bus == "default" else f"{bus}|{name}"
    return ref, {"Arn": arn}


def _queue_policy(
    client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack
) -> tuple[str, dict[str, str]]:
    client = client_for("sqs")
    for url in props["Queues"]:
        client.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(props["PolicyDocument"])})
    return name, {}


def _email_identity(
    client_for: ClientFactory, name: str, props: dict[str, Any], stack: Stack
) -> tuple[str, dict[str, str]]:
    # moto's SES counts an address as verified at once (AWS mails a link first); SendEmail from it then works.
    identity = props["EmailIdentity"]
    client_for("ses").verify_email_identity(EmailAddress=identity)
    return identity, {}


CREATORS: dict[str, Creator] = {
    "AWS::DynamoDB::Table": _table,
    "AWS::SQS::Queue": _queue,
    "AWS::SNS::Topic": _topic,
    "AWS::KMS::Key": _kms_key,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::SNS::Subscription": _subscription,
    "AWS::Events::EventBus": _event_bus,
    "AWS::Events::Rule": _event_rule,
    "AWS::SQS::QueuePolicy": _queue_policy,
    "AWS::SES::EmailIdentity": _email_identity,
}


def _condition_holds(value: Any, conditions: dict[str, Any], stack: Stack) -> bool:
    """Evaluates a template condition (``Fn::Equals``, ``Fn::Not``, ``Fn::And``, ``Fn::Or``, ``Condition``)."""
    ((key, argument),) = value.items()
    if key == "Condition":
        return _condition_holds(conditions[argument], conditions, stack)
    if key == "Fn::Equals":
        left, right = (stack.resolve(item) for item in argument)
        return str(left) == str(right)
    if key == "Fn::Not":
        return not _condition_holds(argument[0], conditions, stack)
    if key == "Fn::And":
        return all(_condition_holds(item, conditions, stack) for item in argument)
    if key == "Fn::Or":
        return any(_condition_holds(item, conditions, stack) for item in argument)
    raise NotImplementedError(f"the local cloud cannot evaluate the condition function {key} yet")


def _dependencies(value: Any) -> set[str]:
    """Logical ids a resource's properties refer to."""
    if isinstance(value, list):
        return set().union(*(_dependencies(item) for item in value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, argument in value.items():
        if key == "Ref" and isinstance(argument, str):
            found.add(argument)
        elif key == "Fn::GetAtt":
            found.add(argument[0])
        elif key == "Fn::Sub" and isinstance(argument, str):
            found.update(match.split(".")[0] for match in _SUB_VARIABLE.findall(argument))
        else:
            found |= _dependencies(argument)
    return found


class MissingParameters(ValueError):
    """Template parameters without a value, or values for parameters the template does not declare."""


def parameter_values(declared: dict[str, Any], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Each declared parameter's value, ``overrides`` over its ``Default``, refused as CloudFormation
    refuses a stack: a parameter with neither, or a value for a parameter it does not declare."""
    overrides = overrides or {}
    unknown = sorted(overrides.keys() - declared.keys())
    if unknown:
        raise MissingParameters(f"Parameters: [{', '.join(unknown)}] do not exist in the template")
    missing = [name for name, spec in declared.items() if name not in overrides and "Default" not in spec]
    if missing:
        raise MissingParameters(
            f"Parameters: [{', '.join(missing)}] must have values (the template gives them no default: "
            "pass them as parameter overrides)"
        )
    return {name: str(overrides.get(name, spec.get("Default"))) for name, spec in declared.items()}


def provision(
    template: dict[str, Any],
    client_for: ClientFactory,
    region: str,
    stack_name: str,
    parameter_overrides: dict[str, str] | None = None,
) -> Stack:
    """Creates every plain CloudFormation resource of ``template`` in dependency order; refuses first, as
    CloudFormation does, a parameter left without a value (``MissingParameters``)."""
    infra = infrastructure(template)
    parameters = parameter_values(infra["Parameters"], parameter_overrides)
    stack = Stack(name=stack_name, region=region, parameters=parameters)
    conditions = infra["Conditions"]
    # A resource whose Condition is false is not created, as CloudFormation skips it.
    pending = {
        logical_id: resource
        for logical_id, resource in infra["Resources"].items()
        if "Condition" not in resource or _condition_holds({"Condition": resource["Condition"]}, conditions, stack)
    }
    while pending:
        ready = [
            logical_id
            for logical_id, resource in pending.items()
            if not (_dependencies(resource.get("Properties", {})) & pending.keys())
        ]
        if not ready:
            raise ValueError(f"circular references between {sorted(pending)}")
        for logical_id in ready:
            resource = pending.pop(logical_id)
            creator = CREATORS.get(resource["Type"])
            if creator is None:
                raise NotImplementedError(
                    f"{logical_id}: the local cloud cannot create {resource['Type']} yet; add a creator"
                )
            props = stack.resolve(resource.get("Properties", {}))
            ref, attributes = creator(client_for, f"{stack_name}-{logical_id}", props, stack)
            stack.refs[logical_id] = ref
            stack.attributes[logical_id] = attributes
    return stack
