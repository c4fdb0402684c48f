"""Reads ``template.yaml``: the plain CloudFormation resources and the SAM functions with their events."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML loader that turns CloudFormation short-form tags into their long form."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open() as handle:
        template: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
        return template


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str
    authorized: bool


@dataclass(frozen=True)
class QueueBinding:
    queue_logical_id: str
    batch_size: int
    batching_window_seconds: int
    report_batch_item_failures: bool
    maximum_concurrency: int


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    module: str
    handler: str
    timeout: int
    memory_mb: int
    environment: dict[str, Any]
    routes: list[HttpRoute] = field(default_factory=list)
    queues: list[QueueBinding] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    # SnapStart (``SnapStart: {ApplyOn: PublishedVersions}``): the local worker runs the function's
    # before-snapshot hooks, then its after-restore hooks, between the import and the first event.
    snapstart: bool = False
    # ``AutoPublishAlias``: on AWS every caller invokes this alias; locally there is one version, the code.
    alias: str | None = None


def _queue_of(arn_ref: Any) -> str:
    if isinstance(arn_ref, dict) and "Fn::GetAtt" in arn_ref:
        return str(arn_ref["Fn::GetAtt"][0])
    raise ValueError(f"SQS event Queue must be !GetAtt <Queue>.Arn, got {arn_ref!r}")


def function_specs(template: dict[str, Any]) -> list[FunctionSpec]:
    """Every AWS::Serverless::Function with Globals applied, as the local runtime needs it."""
    globals_ = template.get("Globals", {}).get("Function", {})
    api_auth = _default_authorizer(template)
    specs = []
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = {**globals_, **resource["Properties"]}
        module, handler = props["Handler"].rsplit(".", 1)
        environment = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **resource["Properties"].get("Environment", {}).get("Variables", {}),
        }
        spec = FunctionSpec(
            logical_id=logical_id,
            code_dir=(ROOT / props["CodeUri"]).resolve(),
            module=module,
            handler=handler,
            timeout=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            environment=environment,
            snapstart=props.get("SnapStart", {}).get("ApplyOn") == "PublishedVersions",
            alias=props.get("AutoPublishAlias"),
        )
        for event in props.get("Events", {}).values():
            event_props = event.get("Properties", {})
            if event["Type"] == "HttpApi":
                auth = event_props.get("Auth", {}).get("Authorizer", api_auth)
                spec.routes.append(
                    HttpRoute(event_props["Method"].upper(), event_props["Path"], auth not in (None, "NONE"))
                )
            elif event["Type"] == "SQS":
                spec.queues.append(
                    QueueBinding(
                        queue_logical_id=_queue_of(event_props["Queue"]),
                        batch_size=int(event_props.get("BatchSize", 10)),
                        batching_window_seconds=int(event_props.get("MaximumBatchingWindowInSeconds", 0)),
                        report_batch_item_failures="ReportBatchItemFailures"
                        in event_props.get("FunctionResponseTypes", []),
                        maximum_concurrency=int(event_props.get("ScalingConfig", {}).get("MaximumConcurrency", 1000)),
                    )
                )
            elif event["Type"] == "Schedule":
                spec.schedules.append(str(event_props["Schedule"]))
        specs.append(spec)
    return specs


def queues_bound_to(template: dict[str, Any], function_logical_id: str) -> list[str]:
    """The logical ids of the queues whose SQS events invoke the function, in the template's order
    (the fetcher's: FetchQueue, then each provider's fetch lane)."""
    (spec,) = [spec for spec in function_specs(template) if spec.logical_id == function_logical_id]
    return [binding.queue_logical_id for binding in spec.queues]


def _default_authorizer(template: dict[str, Any]) -> str | None:
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::HttpApi":
            name: str | None = resource["Properties"].get("Auth", {}).get("DefaultAuthorizer")
            return name
    return None


def authorizer_function(template: dict[str, Any]) -> str:
    """Logical id of the function behind the HTTP API's default Lambda authorizer."""
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Serverless::HttpApi":
            continue
        auth = resource["Properties"]["Auth"]
        arn = auth["Authorizers"][auth["DefaultAuthorizer"]]["FunctionArn"]
        return function_of_arn(template, arn)
    raise ValueError("template has no AWS::Serverless::HttpApi with a default authorizer")


def function_of_arn(template: dict[str, Any], arn: Any) -> str:
    """The function a template's function ARN names: ``!GetAtt F.Arn`` (the function itself), or its
    ``AutoPublishAlias`` as SAM lets a template name it, ``!Ref F.Alias`` or ``!Ref FAlias<alias>``."""
    resources = template["Resources"]
    if isinstance(arn, dict) and "Fn::GetAtt" in arn and arn["Fn::GetAtt"][1] == "Arn":
        return str(arn["Fn::GetAtt"][0])
    if isinstance(arn, dict) and isinstance(arn.get("Ref"), str):
        name = arn["Ref"].removesuffix(".Alias")
        for logical_id, resource in resources.items():
            alias = resource.get("Properties", {}).get("AutoPublishAlias")
            is_function = resource["Type"] == "AWS::Serverless::Function"
            if is_function and alias and name in (logical_id, f"{logical_id}Alias{alias}"):
                return str(logical_id)
    raise ValueError(f"not a function's ARN, nor its alias's: {arn!r}")


def authorizer_cache_seconds(template: dict[str, Any]) -> int:
    """How long API Gateway reuses the default authorizer's verdict for one identity (its
    ``Identity.ReauthorizeEvery``; 0 when it does not cache)."""
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::HttpApi":
            auth = resource["Properties"]["Auth"]
            identity = auth["Authorizers"][auth["DefaultAuthorizer"]].get("Identity", {})
            return int(identity.get("ReauthorizeEvery", 0))
    return 0


def infrastructure(template: dict[str, Any]) -> dict[str, Any]:
    """The template's plain CloudFormation resources that moto can create (no SAM, no Lambda).

    Serverless resources are played by the local runtime instead; log groups for the API's access
    logs have nothing to receive locally.
    """
    skipped_prefixes = ("AWS::Serverless::", "AWS::Lambda::", "AWS::ApiGatewayV2::", "AWS::Logs::")
    resources = {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if not resource["Type"].startswith(skipped_prefixes)
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": template.get("Parameters", {}),
        "Conditions": template.get("Conditions", {}),
        "Resources": resources,
    }
