"""AzureBatchPool: one Azure Batch job per trapbatch task, one Batch task per shard attempt (azure-batch 15.x).

Why these choices:
* Deterministic ids (job = task id, Batch task = ``<shard>-a<attempt>``) make submission idempotent: the SDK's
  ``create_tasks`` treats "TaskExists" as success, and ``create_job`` on an existing job is caught here.
* ``max_task_retry_count=0``: Batch must not re-run a whole shard; the orchestration resubmits only the missing images.
  ``max_wall_clock_time`` terminates a hung task, which then completes as a failure and gets resubmitted.
* No keys or SAS in any request: the worker reaches storage through the pool's user-assigned managed identity
  (``AZURE_CLIENT_ID`` selects it) and ``TRAPBATCH_STORAGE_ACCOUNT_URL``; this client authenticates with Entra ID.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Sequence

from gpu_batch.pool.base import ShardTask, TaskInfo, TaskResult, TaskState

logger = logging.getLogger(__name__)


class AzureBatchPool:
    def __init__(self, account_url: str, pool_id: str, image: str, identity_resource_id: str = "",
                 storage_account_url: str = "", max_task_seconds: int = 21600, credential: Any = None,
                 transport: Any = None, worker_identity_client_id: str = "", key_vault_url: str = "") -> None:
        if not account_url or not pool_id or not image:
            raise ValueError("AzureBatchPool needs the Batch account URL, pool id and worker image "
                             "(TRAPBATCH_BATCH_ACCOUNT_URL, TRAPBATCH_BATCH_POOL_ID, TRAPBATCH_WORKER_IMAGE)")
        self.account_url = account_url
        self.pool_id = pool_id
        self.image = image
        self.identity_client_id = worker_identity_client_id or identity_resource_id
        self.storage_account_url = storage_account_url
        self.key_vault_url = key_vault_url  # source-account secrets, read by the nodes' identity (never passed)
        self.max_task_seconds = max_task_seconds
        self._credential = credential
        self._transport = transport
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from azure.batch import BatchClient

            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            kwargs = {"transport": self._transport} if self._transport is not None else {}
            self._client = BatchClient(self.account_url, credential, **kwargs)
        return self._client

    def ensure_job(self, job_id: str) -> None:
        from azure.batch import models as m
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        job = m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=self.pool_id),
                                      display_name=f"trapbatch {job_id}")
        try:
            self.client.create_job(job)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if getattr(getattr(exc, "error", None), "code", "") != "JobExists":
                raise

    def task_options(self, task: ShardTask) -> Any:
        from azure.batch import models as m

        env = [m.EnvironmentSetting(name="TRAPBATCH_STORAGE_ACCOUNT_URL", value=self.storage_account_url),
               m.EnvironmentSetting(name="TRAPBATCH_DEVICE", value="cuda")]
        if self.identity_client_id:
            env.append(m.EnvironmentSetting(name="AZURE_CLIENT_ID", value=self.identity_client_id))
        if self.key_vault_url:
            env.append(m.EnvironmentSetting(name="TRAPBATCH_KEY_VAULT_URL", value=self.key_vault_url))
        return m.BatchTaskCreateOptions(
            id=task.task_id,
            display_name=f"shard {task.shard_id} attempt {task.attempt}",
            command_line="python -m gpu_batch.worker " + " ".join(task.worker_args()),
            container_settings=m.BatchTaskContainerSettings(image_name=self.image,
                                                            container_run_options="--rm --gpus all --shm-size 8g",
                                                            working_directory="containerImageDefault"),
            environment_settings=env,
            constraints=m.BatchTaskConstraints(max_wall_clock_time=timedelta(seconds=self.max_task_seconds),
                                               max_task_retry_count=0),
            user_identity=m.UserIdentity(auto_user=m.AutoUserSpecification(scope="pool", elevation_level="nonadmin")),
        )

    def submit(self, job_id: str, tasks: Sequence[ShardTask]) -> None:
        if tasks:
            self.client.create_tasks(job_id, [self.task_options(t) for t in tasks])
            logger.info("job %s: submitted %d Batch tasks", job_id, len(tasks))

    def poll(self, job_id: str, task_ids: Sequence[str] | None = None) -> list[TaskInfo]:
        wanted = set(task_ids) if task_ids is not None else None
        out = []
        for t in self.client.list_tasks(job_id, select=["id", "state", "executionInfo"]):
            if wanted is not None and t.id not in wanted:
                continue
            info = t.execution_info
            result = getattr(info, "result", None) if info else None
            failure = getattr(info, "failure_info", None) if info else None
            out.append(TaskInfo(
                task_id=t.id, state=TaskState(str(getattr(t.state, "value", t.state)).lower()),
                result=TaskResult(str(getattr(result, "value", result)).lower()) if result else None,
                exit_code=getattr(info, "exit_code", None) if info else None,
                failure_message=getattr(failure, "message", None) if failure else None,
                start_time=str(info.start_time) if info and info.start_time else None,
                end_time=str(info.end_time) if info and info.end_time else None,
            ))
        return out

    def cancel(self, job_id: str, task_id: str | None = None) -> None:
        if task_id:
            self.client.terminate_task(job_id, task_id)
        else:
            # The terminate request is sent here; the returned poller (job reaching "completed") is not waited on.
            # (options must be given: azure-batch 15.1.0 builds no content-type header without a body)
            from azure.batch.models._models import BatchJobTerminateOptions  # not re-exported in 15.1.0

            self.client.begin_terminate_job(job_id, BatchJobTerminateOptions(termination_reason="trapbatch cancel"),
                                            polling_interval=30)
