"""SnapStart in template.yaml: a snapshotted function is published under an alias, and everything that
invokes it (its routes, the authorizer, an event source mapping) invokes that alias. An invoker naming
the function itself would run $LATEST, which SnapStart never snapshots."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from localcloud.template import ROOT, authorizer_function, function_of_arn, function_specs

# docs/decisions.md, "SnapStart where it pays": the authorizer and the HTTP functions a person waits on.
SNAPSTART = {
    "AuthorizerFunction",
    "AuthFunction",
    "LinkAccountFunction",
    "GetBillsFunction",
    "InsightsFunction",
    "RefreshFunction",
    "WebhooksFunction",
}
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"

# SAM's own translation (the tools venv's samtranslator, offline), printed as JSON.
TRANSLATE = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

template = yaml_parse(open(sys.argv[1]).read())
for resource in template["Resources"].values():
    properties = resource.get("Properties", {})
    for key in ("CodeUri", "ContentUri"):  # what `sam build` and `sam deploy` put there
        if key in properties:
            properties[key] = "s3://bucket/" + properties[key].strip("/")

class NoManagedPolicies:
    def load(self):
        return {}

print(json.dumps(transform(template, {}, NoManagedPolicies())))
"""


def _props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return {**template["Globals"]["Function"], **template["Resources"][logical_id]["Properties"]}


def test_snapstart_is_on_where_the_decision_puts_it_each_with_an_alias(template: dict[str, Any]) -> None:
    snapshotted = {spec.logical_id for spec in function_specs(template) if spec.snapstart}
    assert snapshotted == SNAPSTART
    for logical_id in snapshotted:
        props = _props(template, logical_id)
        assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}, logical_id
        assert props.get("AutoPublishAlias"), f"{logical_id}: SnapStart needs a published version behind an alias"
        # What SnapStart supports (AWS, "Supported features and limitations"): Python 3.12 and later, no
        # provisioned concurrency, no EFS, at most 512 MB of ephemeral storage.
        major, minor = props["Runtime"].removeprefix("python").split(".")
        assert (int(major), int(minor)) >= (3, 12), logical_id
        assert "ProvisionedConcurrencyConfig" not in props and "FileSystemConfigs" not in props, logical_id
        assert props.get("EphemeralStorage", {}).get("Size", 512) <= 512, logical_id
    # An alias without SnapStart would publish versions for nothing.
    aliased = {spec.logical_id for spec in function_specs(template) if spec.alias}
    assert aliased == SNAPSTART


def test_the_authorizer_is_invoked_through_its_alias(template: dict[str, Any]) -> None:
    api = next(r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::HttpApi")
    auth = api["Properties"]["Auth"]
    arn = auth["Authorizers"][auth["DefaultAuthorizer"]]["FunctionArn"]
    assert arn == {"Ref": "AuthorizerFunction.Alias"}
    assert authorizer_function(template) == function_of_arn(template, arn) == "AuthorizerFunction"
    with pytest.raises(ValueError, match="alias"):
        function_of_arn(template, {"Ref": "FetchProviderFunction.Alias"})  # it has none


def _function_refs(value: Any) -> set[str]:
    """Every logical id a translated resource's properties name, through Ref, GetAtt or a Sub variable."""
    if isinstance(value, list):
        return set().union(*map(_function_refs, value)) if value else set()
    if isinstance(value, str):
        return {part.split("}")[0].split(".")[0] for part in value.split("${")[1:]}
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, argument in value.items():
        if key == "Ref" and isinstance(argument, str):
            found.add(argument)
        elif key == "Fn::GetAtt":
            found.add(argument[0] if isinstance(argument, list) else str(argument).split(".")[0])
        else:
            found |= _function_refs(argument)
    return found


@pytest.mark.skipif(not TOOLS_PYTHON.exists(), reason="needs the tools venv (make install) for SAM's translator")
def test_every_invoker_of_a_snapstart_function_names_its_alias(template: dict[str, Any]) -> None:
    translated = subprocess.run(  # noqa: S603 - our own tools venv, fixed arguments
        [str(TOOLS_PYTHON), "-c", TRANSLATE, str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        timeout=120,
    )
    resources: dict[str, Any] = json.loads(translated.stdout)["Resources"]
    aliases = {f"{name}Alias{_props(template, name)['AutoPublishAlias']}": name for name in SNAPSTART}
    assert set(aliases) <= set(resources)
    invoked: dict[str, set[str]] = {name: set() for name in SNAPSTART}
    for logical_id, resource in resources.items():
        properties = resource.get("Properties", {})
        if resource["Type"] in ("AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping"):
            named = _function_refs(properties["FunctionName"])
        elif resource["Type"] == "AWS::ApiGatewayV2::Api":
            named = _function_refs(properties.get("Body", {}))  # routes and the authorizer
        elif resource["Type"] == "AWS::ApiGatewayV2::Authorizer":
            named = _function_refs(properties.get("AuthorizerUri"))
        else:
            continue
        assert not named & SNAPSTART, f"{logical_id} invokes {sorted(named & SNAPSTART)} itself, not the alias"
        for alias in named & set(aliases):
            invoked[aliases[alias]].add(logical_id)
    # Each of them is invoked at all, through its alias: every route's permission and the API's integration.
    assert all(invoked.values()), invoked
    assert "HttpApiJwtAuthorizerAuthorizerPermission" in invoked["AuthorizerFunction"]
