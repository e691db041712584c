"""Durable state of devhost in Azure Storage (Azurite locally): instances, histories, messages, activity work items.

Why storage and not memory: killing devhost (even ``kill -9``) and starting it again must resume every running
orchestration, as the real Durable extension does with its Azure Storage backend. Layout, per task hub:

    table <hub>Instances    PK "i",          RK instance id      name, status, input, output, custom status, parent
    table <hub>Messages     PK instance id,  RK time-ordered id  one history event to deliver (Due for timers)
    table <hub>Activities   PK instance id,  RK execution+task   one activity (or retry) to run
    table <hub>Receipts     PK function,     RK blob-name hash   blob versions a blob trigger already fired for
                            PK "delivery:" + function, RK hash of blob name and ETag: an Event Grid event not yet
                            delivered, with its tries and next try time (devhost.event_grid.Deliveries)
    container <hub>-state   history/<instance>.json             the orchestration history and host bookkeeping

Large payloads go to blobs in the same container and the table entity keeps a reference, as the Durable extension's
Azure Storage provider does (durable-functions-azure-storage-provider.md: messages and table properties over its
45 KB threshold are compressed into blobs): message and activity payloads to ``payloads/<id>``, an instance's Input,
Output, CustomStatus and Error to ``instances/<instance>/<field>`` (``<Field>BlobName`` on the entity). devhost's
threshold is ``INLINE_LIMIT`` UTF-16 code units, uncompressed, under the Table service's 64 KiB string-property limit
(a 32 KB property write is refused by Azure Storage and by Azurite alike). Callers never see the difference: values of
any size go in and come out.

Single-host design: one devhost per task hub at a time (like one Functions host locally).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Any, Iterator

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient
from devhost.hostjson import check_task_hub_name

INLINE_LIMIT = 30_000  # UTF-16 code units; the Table service refuses string properties over 64 KiB (32K units)
TERMINAL = ("Completed", "Failed", "Terminated")
LARGE_INSTANCE_FIELDS = ("Input", "Output", "CustomStatus", "Error")


def utf16_units(text: str) -> int:
    """Length as the Table service (and .NET) counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _odata_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _key(text: str) -> str:
    """Table keys may not contain / \\ # ? or control characters."""
    return re.sub(r"[/\\#?\x00-\x1f]", "_", text)


class Store:
    def __init__(self, connection_string: str, hub: str) -> None:
        self.hub = check_task_hub_name(hub)  # at most 49: hub + "Activities" fits a table name's 63
        self.tables = TableServiceClient.from_connection_string(connection_string)
        self.blobs = BlobServiceClient.from_connection_string(connection_string)
        self.instances = self.tables.create_table_if_not_exists(self.hub + "Instances")
        self.messages = self.tables.create_table_if_not_exists(self.hub + "Messages")
        self.activities = self.tables.create_table_if_not_exists(self.hub + "Activities")
        self.receipts = self.tables.create_table_if_not_exists(self.hub + "Receipts")
        self.container = self.blobs.get_container_client(self.hub.lower() + "-state")
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    # ---------------------------------------------------------------- payloads
    def _pack(self, value: str | None) -> dict[str, Any]:
        if value is None:
            return {"Null": True}
        if utf16_units(value) <= INLINE_LIMIT:
            return {"Inline": value}
        ref = "payloads/" + uuid.uuid4().hex
        self.container.upload_blob(ref, value.encode("utf-8"), overwrite=True)
        return {"Ref": ref}

    def _unpack(self, entity: dict[str, Any]) -> str | None:
        if entity.get("Null"):
            return None
        if "Ref" in entity and entity["Ref"]:
            return self.container.download_blob(entity["Ref"]).readall().decode("utf-8")
        return str(entity.get("Inline", ""))

    # --------------------------------------------------------------- instances
    def _instance_blob(self, instance_id: str, field: str) -> str:
        return f"instances/{_key(instance_id)}/{field}"

    def _unpack_instance(self, entity: dict[str, Any]) -> dict[str, Any]:
        e = dict(entity)
        for field in LARGE_INSTANCE_FIELDS:
            ref = e.get(field + "BlobName")
            if ref:
                try:
                    e[field] = self.container.download_blob(ref).readall().decode("utf-8")
                except ResourceNotFoundError:  # replaced under us by a newer write: read what the entity says now
                    e[field] = ""
        return e

    def get_instance(self, instance_id: str) -> dict[str, Any] | None:
        try:
            e = self._unpack_instance(dict(self.instances.get_entity("i", _key(instance_id))))
        except ResourceNotFoundError:
            return None
        e["instanceId"] = e.get("InstanceId", instance_id)
        return e

    def put_instance(self, instance_id: str, **fields: Any) -> None:
        """Merge ``fields`` into the instance's entity; a large Input/Output/CustomStatus/Error goes to a blob."""
        for field in LARGE_INSTANCE_FIELDS:
            value = fields.get(field)
            if not isinstance(value, str):
                continue
            if utf16_units(value) > INLINE_LIMIT:
                ref = self._instance_blob(instance_id, field)
                self.container.upload_blob(ref, value.encode("utf-8"), overwrite=True)
                fields[field], fields[field + "BlobName"] = "", ref
            else:
                fields[field + "BlobName"] = ""
        entity = {"PartitionKey": "i", "RowKey": _key(instance_id), "InstanceId": instance_id,
                  "LastUpdated": time.time(), **fields}
        self.instances.upsert_entity(entity, mode=UpdateMode.MERGE)

    def list_instances(self) -> list[dict[str, Any]]:
        return [self._unpack_instance(dict(e)) for e in self.instances.query_entities("PartitionKey eq 'i'")]

    def query_instances(self, *, prefix: str = "", statuses: tuple[str, ...] = (), created_from: str = "",
                        created_to: str = "", after: str = "", top: int = 100) -> tuple[list[dict[str, Any]], bool]:
        """One page of instances in instance-id order, filtered in the table query (as the Azure Storage provider's
        ``GetStateAsync(condition, top, continuationToken)``). Returns ``(page, more)``; ``after`` is the last
        instance id of the previous page.
        """
        clauses = ["PartitionKey eq 'i'"]
        if after:
            clauses.append(f"RowKey gt {_odata_quote(_key(after))}")
        if prefix:
            clauses.append(f"RowKey ge {_odata_quote(_key(prefix))}")
            clauses.append(f"RowKey lt {_odata_quote(_key(prefix) + chr(0xFFFF))}")
        if statuses:
            clauses.append("(" + " or ".join(f"Status eq {_odata_quote(st)}" for st in statuses) + ")")
        if created_from:
            clauses.append(f"CreatedTime ge {_odata_quote(created_from)}")
        if created_to:
            clauses.append(f"CreatedTime le {_odata_quote(created_to)}")
        out: list[dict[str, Any]] = []
        for e in self.instances.query_entities(" and ".join(clauses), results_per_page=min(top + 1, 1000)):
            if len(out) == top:
                return out, True
            out.append(self._unpack_instance(dict(e)))
        return out, False

    def delete_instance(self, instance_id: str) -> None:
        try:
            self.instances.delete_entity("i", _key(instance_id))
        except ResourceNotFoundError:
            pass
        for field in LARGE_INSTANCE_FIELDS:
            try:
                self.container.delete_blob(self._instance_blob(instance_id, field))
            except ResourceNotFoundError:
                pass
        self.delete_history(instance_id)

    # ----------------------------------------------------------------- history
    def load_history(self, instance_id: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.container.download_blob(f"history/{_key(instance_id)}.json").readall())
            return doc
        except ResourceNotFoundError:
            return None

    def save_history(self, instance_id: str, doc: dict[str, Any]) -> None:
        self.container.upload_blob(f"history/{_key(instance_id)}.json", json.dumps(doc).encode("utf-8"), overwrite=True)

    def delete_history(self, instance_id: str) -> None:
        try:
            self.container.delete_blob(f"history/{_key(instance_id)}.json")
        except ResourceNotFoundError:
            pass

    # ---------------------------------------------------------------- messages
    def add_message(self, instance_id: str, event: dict[str, Any], execution_id: str, due: str = "",
                    message_id: str | None = None, first_wins: bool = False) -> str:
        """Queue ``event`` for the instance. ``first_wins``: a message with that id already queued stays as it is
        (an activity's completion: DTFx processes the first completion of a task and drops later ones; an upsert
        let a second run's failure replace the first run's success before the episode read it)."""
        mid = message_id or f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        body = json.dumps(event)
        entity = {"PartitionKey": _key(instance_id), "RowKey": mid, "InstanceId": instance_id,
                  "ExecutionId": execution_id, "Due": due, **self._pack(body)}
        if not first_wins:
            self.messages.upsert_entity(entity)
            return mid
        try:
            self.messages.create_entity(entity)
        except ResourceExistsError:
            if entity.get("Ref"):
                self.container.delete_blob(entity["Ref"])
        return mid

    def list_messages(self) -> Iterator[dict[str, Any]]:
        for e in self.messages.list_entities():
            yield dict(e)

    def message(self, instance_id: str, message_id: str) -> dict[str, Any] | None:
        """The queued message ``message_id`` of the instance, or None when there is none."""
        try:
            return dict(self.messages.get_entity(_key(instance_id), message_id))
        except ResourceNotFoundError:
            return None

    def message_event(self, entity: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self._unpack(entity) or "{}")
        return event

    def delete_message(self, entity: dict[str, Any]) -> None:
        try:
            self.messages.delete_entity(entity["PartitionKey"], entity["RowKey"])
        except ResourceNotFoundError:
            pass
        if entity.get("Ref"):
            try:
                self.container.delete_blob(entity["Ref"])
            except ResourceNotFoundError:
                pass

    def delete_messages_of(self, instance_id: str) -> None:
        for e in list(self.messages.query_entities("PartitionKey eq @pk", parameters={"pk": _key(instance_id)})):
            self.delete_message(dict(e))

    # -------------------------------------------------------------- activities
    def add_activity(self, instance_id: str, execution_id: str, task_id: int, name: str, input_json: str | None) -> None:
        self.activities.upsert_entity({"PartitionKey": _key(instance_id), "RowKey": f"{execution_id}-{task_id:06d}",
                                       "InstanceId": instance_id, "ExecutionId": execution_id, "TaskId": task_id,
                                       "Name": name, **self._pack(input_json)})

    def list_activities(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.activities.list_entities()]

    def activity_exists(self, entity: dict[str, Any]) -> bool:
        """Whether the work item is still queued: a listing is a snapshot, and the activity it shows may have run
        and been deleted since (``Engine._run_activity`` reads this before it runs one)."""
        try:
            self.activities.get_entity(entity["PartitionKey"], entity["RowKey"], select=["PartitionKey"])
        except ResourceNotFoundError:
            return False
        return True

    def activity_input(self, entity: dict[str, Any]) -> str | None:
        return self._unpack(entity)

    def delete_activity(self, entity: dict[str, Any]) -> None:
        try:
            self.activities.delete_entity(entity["PartitionKey"], entity["RowKey"])
        except ResourceNotFoundError:
            pass

    def delete_activities_of(self, instance_id: str) -> None:
        for e in list(self.activities.query_entities("PartitionKey eq @pk", parameters={"pk": _key(instance_id)})):
            self.delete_activity(dict(e))

    # ---------------------------------------------------------------- receipts
    def has_receipt(self, function: str, blob_name: str, etag: str) -> bool:
        try:
            e = self.receipts.get_entity(_key(function), hashlib.sha256(blob_name.encode()).hexdigest())
        except ResourceNotFoundError:
            return False
        return bool(e.get("Etag") == etag)

    def add_receipt(self, function: str, blob_name: str, etag: str) -> None:
        self.receipts.upsert_entity({"PartitionKey": _key(function),
                                     "RowKey": hashlib.sha256(blob_name.encode()).hexdigest(),
                                     "BlobName": blob_name, "Etag": etag})

    # ---------------------------------------------------------------- Event Grid deliveries
    def save_delivery(self, function: str, blob_name: str, etag: str, fields: dict[str, Any]) -> None:
        """Keep an Event Grid event that is not delivered yet (``devhost.event_grid.Deliveries``), beside the
        receipts: a restart resumes its schedule from here."""
        self.receipts.upsert_entity({"PartitionKey": _delivery_partition(function),
                                     "RowKey": _delivery_row(blob_name, etag), "BlobName": blob_name, "Etag": etag,
                                     **fields}, mode=UpdateMode.REPLACE)

    def delete_delivery(self, function: str, blob_name: str, etag: str) -> None:
        try:
            self.receipts.delete_entity(_delivery_partition(function), _delivery_row(blob_name, etag))
        except ResourceNotFoundError:
            pass

    def deliveries(self, function: str) -> list[dict[str, Any]]:
        return [dict(e) for e in self.receipts.query_entities("PartitionKey eq @pk",
                                                              parameters={"pk": _delivery_partition(function)})]


def _delivery_partition(function: str) -> str:
    return _key("delivery:" + function)


def _delivery_row(blob_name: str, etag: str) -> str:
    return hashlib.sha256(f"{blob_name}\n{etag}".encode()).hexdigest()
