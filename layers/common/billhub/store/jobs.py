"""Refresh jobs: what ``POST /refresh`` started and each account's outcome, kept for a week (by TTL)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from billhub import keys
from billhub.models import JobAccountResult, RefreshJob
from billhub.store.base import Table, _from_item, _is_conditional_failure, _to_item

JOB_TTL_SECONDS = 7 * 24 * 3600


class RefreshJobs(Table):
    """The user's refresh jobs, in their partition."""

    def create_job(self, job: RefreshJob) -> None:
        values = job.model_dump(mode="json")
        values.update(
            {
                "PK": keys.user_pk(job.user_id),
                "SK": keys.job_sk(job.job_id),
                "type": "job",
                "expires_at": int(job.created_at.timestamp()) + JOB_TTL_SECONDS,
            }
        )
        self._client.put_item(
            TableName=self._table, Item=_to_item(values), ConditionExpression="attribute_not_exists(PK)"
        )

    def get_job(self, user_id: str, job_id: str) -> RefreshJob | None:
        item = self._get(keys.user_pk(user_id), keys.job_sk(job_id), consistent=True)
        return RefreshJob.model_validate(item) if item else None

    def record_job_result(
        self, user_id: str, job_id: str, account_id: str, result: JobAccountResult
    ) -> RefreshJob | None:
        """Sets one account's outcome in the job, and answers the job as it is then (None: expired); a
        redelivered message overwrites the same entry."""
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=_to_item({"PK": keys.user_pk(user_id), "SK": keys.job_sk(job_id)}),
                UpdateExpression="SET results.#account = :result",
                ConditionExpression="attribute_exists(PK)",
                ExpressionAttributeNames={"#account": account_id},
                ExpressionAttributeValues=_to_item({":result": result.model_dump(exclude_none=True)}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            # The job expired; the account's own status still tells the outcome.
            return None
        return RefreshJob.model_validate(_from_item(answer["Attributes"]))
