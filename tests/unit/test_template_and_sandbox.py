"""template.yaml carries the contract the local cloud and AWS both rely on; the sandbox is deterministic."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from billhub import keys
from localcloud.provision import MissingParameters, parameter_values, provision
from localcloud.template import ROOT, authorizer_function, function_specs, infrastructure
from mock_provider import northgas
from mock_provider.registry import service_clients, service_parameters
from mock_provider.sandbox import HISTORY_MONTHS, monthly_bills

GATEWAY = "http://127.0.0.1:3000"  # where the local cloud serves the API
PUBLIC_ROUTES = {"POST /auth/register", "POST /auth/login", "GET /accounts/oauth/{provider}/callback"}
DESIGN_ROUTES = {
    "POST /auth/register": "AuthFunction",
    "POST /auth/login": "AuthFunction",
    "GET /me": "AuthFunction",
    "PATCH /me": "AuthFunction",
    "DELETE /me": "AuthFunction",
    "GET /providers": "LinkAccountFunction",
    "POST /accounts/link": "LinkAccountFunction",
    "GET /accounts": "LinkAccountFunction",
    "PUT /accounts/{account_id}/credentials": "LinkAccountFunction",
    "GET /accounts/oauth/{provider}/start": "LinkAccountFunction",
    "GET /accounts/oauth/{provider}/callback": "LinkAccountFunction",
    "DELETE /accounts/{account_id}": "DeleteAccountFunction",
    "GET /bills": "GetBillsFunction",
    "GET /bills/{provider}": "GetBillsFunction",
    "GET /insights": "InsightsFunction",
    "POST /bills/refresh": "RefreshFunction",
    "GET /bills/refresh/{job_id}": "RefreshFunction",
    "POST /webhooks": "WebhooksFunction",
    "GET /webhooks": "WebhooksFunction",
    "GET /webhooks/{webhook_id}": "WebhooksFunction",
    "DELETE /webhooks/{webhook_id}": "WebhooksFunction",
    "POST /webhooks/{webhook_id}/rotate-secret": "WebhooksFunction",
    "POST /webhooks/{webhook_id}/enable": "WebhooksFunction",
    "POST /webhooks/{webhook_id}/test": "WebhooksFunction",
    "GET /webhooks/{webhook_id}/deliveries": "WebhooksFunction",
}


def test_every_designed_route_is_wired_to_its_function(template: dict[str, Any]) -> None:
    routes = {
        f"{route.method} {route.path}": spec.logical_id for spec in function_specs(template) for route in spec.routes
    }
    assert routes == DESIGN_ROUTES


# API Gateway's HTTP API gives up on an integration after 30 s; a cold start's set-up (Lambda's Init
# phase, not counted in the function's timeout) comes out of the same 30 s.
HTTP_API_INTEGRATION_TIMEOUT_SECONDS = 30
INIT_ALLOWANCE_SECONDS = 2


def test_every_http_routed_function_times_out_before_the_gateway_gives_up(template: dict[str, Any]) -> None:
    routed = {spec.logical_id: spec.timeout for spec in function_specs(template) if spec.routes}
    assert set(routed) == set(DESIGN_ROUTES.values())
    too_long = {
        name: timeout
        for name, timeout in routed.items()
        if timeout + INIT_ALLOWANCE_SECONDS > HTTP_API_INTEGRATION_TIMEOUT_SECONDS
    }
    assert too_long == {}


def test_the_schedule_runs_the_planner_a_function_of_its_own(template: dict[str, Any]) -> None:
    scheduled = [spec for spec in function_specs(template) if spec.schedules]
    # The planner, and the daily reminders on a schedule of their own.
    assert sorted(spec.logical_id for spec in scheduled) == ["PlannerFunction", "RemindersFunction"]
    (planner,) = [spec for spec in scheduled if spec.logical_id == "PlannerFunction"]
    events = template["Resources"]["PlannerFunction"]["Properties"]["Events"].values()
    (event,) = [event for event in events if event["Type"] == "Schedule"]
    assert event["Properties"]["Schedule"] == {"Ref": "RefreshSchedule"}
    # No route: nothing waits on it, so it is sized for planning, not for the gateway.
    assert planner.routes == []
    assert planner.timeout > HTTP_API_INTEGRATION_TIMEOUT_SECONDS
    assert planner.memory_mb > template["Globals"]["Function"]["MemorySize"]


def test_the_reminders_run_on_their_own_schedule_and_email_only_from_their_sender(template: dict[str, Any]) -> None:
    (reminders,) = [spec for spec in function_specs(template) if spec.logical_id == "RemindersFunction"]
    resource = template["Resources"]["RemindersFunction"]["Properties"]
    (event,) = [event for event in resource["Events"].values() if event["Type"] == "Schedule"]
    assert event["Properties"]["Schedule"] == {"Ref": "ReminderSchedule"}
    assert template["Parameters"]["ReminderSchedule"]["Default"] == "rate(1 hour)"
    assert (reminders.routes, reminders.timeout, reminders.memory_mb) == ([], 300, 512)
    assert reminders.environment["EVENT_BUS_NAME"] == {"Ref": "EventBus"}
    assert reminders.environment["REMINDER_SENDER"] == {"Ref": "ReminderSender"}
    # SES sends only from the sender the stack verifies.
    identity = template["Resources"]["ReminderSenderIdentity"]
    assert (identity["Type"], identity["Properties"]["EmailIdentity"]) == (
        "AWS::SES::EmailIdentity",
        {"Ref": "ReminderSender"},
    )
    ses = [
        statement
        for policy in resource["Policies"]
        if "Statement" in policy
        for statement in policy["Statement"]
        if str(statement["Action"]).startswith("ses:")
    ]
    assert [statement["Action"] for statement in ses] == ["ses:SendRawEmail"]
    assert ses[0]["Resource"]["Fn::Sub"].endswith(":identity/${ReminderSender}")


def test_the_planner_works_its_shards_from_the_plan_queue_all_at_once(template: dict[str, Any]) -> None:
    (planner,) = [spec for spec in function_specs(template) if spec.logical_id == "PlannerFunction"]
    (binding,) = planner.queues
    # One shard per invocation, failures reported per record, and a worker for every shard at once.
    assert (binding.queue_logical_id, binding.batch_size, binding.report_batch_item_failures) == ("PlanQueue", 1, True)
    assert binding.maximum_concurrency >= keys.REFRESH_SHARDS
    queue = template["Resources"]["PlanQueue"]["Properties"]
    # A message stays hidden while its worker may still run (Lambda's SQS integration advises 6x).
    assert int(queue["VisibilityTimeout"]) >= 6 * planner.timeout
    assert queue["SqsManagedSseEnabled"] is True
    assert template["Resources"]["PlanDLQ"]["Properties"]["SqsManagedSseEnabled"] is True


def test_only_register_login_and_oauth_callback_skip_the_authorizer(template: dict[str, Any]) -> None:
    public = {
        f"{route.method} {route.path}"
        for spec in function_specs(template)
        for route in spec.routes
        if not route.authorized
    }
    assert public == PUBLIC_ROUTES
    assert authorizer_function(template) == "AuthorizerFunction"


def test_fetcher_reports_partial_batch_failures_and_queue_outlives_it(template: dict[str, Any]) -> None:
    fetcher = next(spec for spec in function_specs(template) if spec.logical_id == "FetchProviderFunction")
    # FetchQueue and each provider's fetch lane (tests/unit/test_fetch_lanes.py)
    assert len(fetcher.queues) > 1
    for binding in fetcher.queues:
        assert binding.report_batch_item_failures
        assert binding.batch_size == 10
        queue = template["Resources"][binding.queue_logical_id]["Properties"]
        assert queue["VisibilityTimeout"] >= 6 * fetcher.timeout
        assert "deadLetterTargetArn" in queue["RedrivePolicy"]


def test_local_cloud_creates_plain_resources_only(template: dict[str, Any]) -> None:
    types = {resource["Type"] for resource in infrastructure(template)["Resources"].values()}
    assert "AWS::DynamoDB::Table" in types and "AWS::SQS::Queue" in types
    assert not any(kind.startswith("AWS::Serverless::") for kind in types)


def test_sandbox_bills_are_deterministic_and_span_two_years() -> None:
    today = date(2026, 11, 15)
    bills = monthly_bills("CW-00000042", today)
    assert bills == monthly_bills("CW-00000042", today)
    assert bills != monthly_bills("CW-00000043", today)
    assert len(bills) == HISTORY_MONTHS
    assert bills[0].issue_date == date(2026, 11, 1) and bills[-1].issue_date == date(2024, 12, 1)
    assert bills[0].status == "unpaid"
    assert {bill.status for bill in bills[2:]} == {"paid"}
    assert all(bill.amount > Decimal(0) and bill.amount == bill.amount.quantize(Decimal("0.01")) for bill in bills)


def test_the_template_holds_nothing_of_the_sandbox(template: dict[str, Any]) -> None:
    # Given the sandbox's endpoints and client registrations, which only the local cloud passes
    parameters = template["Parameters"]
    # Where the providers are and the service's clients at them have no default: a deploy must say
    assert "Default" not in parameters["ProviderEndpoints"]
    assert "Default" not in parameters["ProviderOAuthClients"]
    assert "Default" not in parameters["PublicBaseUrl"]  # the OAuth2 redirect URIs registered at providers
    assert parameters["ProviderOAuthClients"]["NoEcho"] is True
    assert "ProviderBaseUrl" not in parameters
    shipped = (ROOT / "template.yaml").read_text() + (ROOT / "samconfig.toml").read_text()
    sandbox_values = [client["client_secret"] for client in service_clients().values()]
    sandbox_values += [client["client_id"] for client in service_clients().values()]
    for value in [*sandbox_values, "127.0.0.1", "localhost"]:
        assert value not in shipped


def test_provisioning_refuses_a_required_parameter_without_a_value(template: dict[str, Any]) -> None:
    def nothing_may_be_created(service: str) -> Any:
        raise AssertionError(f"{service} was called before the parameters were checked")

    # Given only the endpoints, not the OAuth clients: refused as CloudFormation refuses the stack
    with pytest.raises(
        MissingParameters, match=r"Parameters: \[PublicBaseUrl, ProviderOAuthClients\] must have values"
    ):
        provision(template, nothing_may_be_created, "us-east-1", "t", {"ProviderEndpoints": "{}"})
    everything = r"Parameters: \[ProviderEndpoints, PublicBaseUrl, ProviderOAuthClients\] must have"
    with pytest.raises(MissingParameters, match=everything):
        provision(template, nothing_may_be_created, "us-east-1", "t")
    # and a value for a parameter the template no longer has (the old single root URL) is not ignored
    stale = {
        **service_parameters("http://127.0.0.1:1", public_base_url=GATEWAY),
        "ProviderBaseUrl": "http://127.0.0.1:1",
    }
    with pytest.raises(MissingParameters, match=r"Parameters: \[ProviderBaseUrl\] do not exist in the template"):
        provision(template, nothing_may_be_created, "us-east-1", "t", stale)


def test_the_local_cloud_passes_the_sandbox_endpoints_and_clients(template: dict[str, Any]) -> None:
    values = parameter_values(
        template["Parameters"], service_parameters("http://127.0.0.1:8300", public_base_url=GATEWAY)
    )
    assert json.loads(values["ProviderEndpoints"])["sparkgrid"] == {
        "api": "http://127.0.0.1:8300/sparkgrid",
        "token": "http://127.0.0.1:8300/sparkgrid/oauth/token",
        "authorize": "http://127.0.0.1:8300/sparkgrid/oauth/authorize",
    }
    assert json.loads(values["ProviderOAuthClients"])["northgas"] == {
        "client_id": northgas.CLIENT.client_id,
        "client_secret": northgas.CLIENT.client_secret,
    }
    assert values["PublicBaseUrl"] == GATEWAY
    assert values["Stage"] == "dev"  # the others keep their defaults
