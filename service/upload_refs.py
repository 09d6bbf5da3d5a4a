"""What a spec sent over HTTP may point at: upload ids of this tenant, never files on the server.

The local CLI reads files by path (`npz.path`, `data_dir`, a Sobolev teacher checkpoint); over HTTP
those would let a tenant make the worker open any path (another tenant's data, or probe which paths
exist), so they are refused with a 422 that says to upload instead (DESIGN §6). Upload ids are
resolved within the tenant: another tenant's id is a 404, exactly like an id that never existed.
Their records go into the job's cost estimate (an uploaded dataset's shape and size, an uploaded
model's measured parameters and FLOPs: core.cost), and a submitted job keeps them from retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.cost import UploadedData, UploadedModel
from core.jobs import JobKind, JobRequest
from core.specs import ExperimentSpec, is_user_model
from core.specs.experiment import is_upload_id
from core.specs.model import RegistryModel
from core.specs.regularizers import Sobolev
from jobstore.records import CheckpointRecord, DatasetRecord
from jobstore.uploads import DatasetStore, Kind
from service.errors import ApiError

UPLOAD_DATASET = ("a dataset of your own must be uploaded: POST /v1/datasets (robustlab upload dataset FILE.npz), "
                  "then name it as dataset: {name: upload, id: <id>}")


def server_path_problems(spec: ExperimentSpec, prefix: str = "spec.") -> list[tuple[str, str]]:
    """Every field that names a file or directory on the server, with what to do instead."""
    problems: list[tuple[str, str]] = []
    dataset = spec.dataset
    if dataset.name == "npz":
        problems.append((f"{prefix}dataset.path",
                         f"specs sent to the service may not name server files; {UPLOAD_DATASET}"))
    if getattr(dataset, "data_dir", None) is not None:
        problems.append((f"{prefix}dataset.data_dir", "specs sent to the service may not name server directories: "
                         "leave data_dir out (the service uses its own dataset directory), or upload your data "
                         "with POST /v1/datasets"))
    if getattr(dataset, "download", False):
        problems.append((f"{prefix}dataset.download", "the service does not download datasets for a job: leave "
                         "download out (the operator provides built-in datasets), or upload your data with "
                         "POST /v1/datasets"))
    for index, reg in enumerate(spec.regularizers):
        if isinstance(reg, Sobolev) and reg.teacher not in {r.name for r in spec.regularizers} \
                and reg.teacher != "dataset" and not is_upload_id(reg.teacher):
            problems.append((f"{prefix}regularizers[{index}].teacher", "specs sent to the service may not name "
                             "server files: upload the teacher with POST /v1/models and give its id, or name a "
                             "run of this spec"))
    return problems


def refuse_server_paths(spec: ExperimentSpec) -> None:
    problems = server_path_problems(spec)
    if problems:
        raise ApiError(422, "server_path", f"the spec names files on the server ({', '.join(p for p, _ in problems)}): "
                       "upload them and use their ids", problems=problems)


def _not_found(what: str, upload_id: str, field: str, how: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {upload_id!r} for this API key: {how}",
                    problems=[(field, f"unknown {what} id")])


@dataclass(frozen=True)
class References:
    """The uploads a job names, as stored: what the cost estimate reads and retention keeps."""

    model: CheckpointRecord | None = None  # the evaluated upload (`checkpoint`)
    dataset: DatasetRecord | None = None
    teachers: tuple[str, ...] = ()  # uploaded Sobolev teachers' ids

    def ids(self) -> list[tuple[Kind, str]]:
        out: list[tuple[Kind, str]] = [("model", t) for t in self.teachers]
        if self.model is not None:
            out.append(("model", self.model.id))
        if self.dataset is not None:
            out.append(("dataset", self.dataset.id))
        return out

    def cost_facts(self) -> dict[str, Any]:
        """Keyword arguments of core.cost.estimate."""
        facts: dict[str, Any] = {}
        if self.dataset is not None:
            d = self.dataset
            facts["dataset"] = UploadedData(d.sample_shape, d.num_classes, d.train_samples, d.test_samples)
        if self.model is not None and self.model.format != "registry":
            facts["model"] = UploadedModel(self.model.parameters or 0, self.model.forward_flops or 0)
        return facts


def check_references(job: JobRequest, tenant: str, store: Any, datasets: DatasetStore) -> References:
    """Every upload the job names exists for this tenant and fits the spec (else 404 / 422): their records."""
    spec = job.spec
    model: CheckpointRecord | None = None
    dataset: DatasetRecord | None = None
    teachers: list[str] = []
    refuse_server_paths(spec)
    if job.kind is JobKind.COMPARE and is_user_model(spec.model):
        raise ApiError(422, "invalid_request", "a compare job trains registry architectures; a model section with "
                       "a format describes an uploaded model: submit an evaluate job with its id as `checkpoint`",
                       problems=[("spec.model.format", "only evaluate jobs take user model formats")])
    if job.kind is JobKind.EVALUATE and job.checkpoint is not None:
        record = store.get_checkpoint(job.checkpoint, tenant) if is_upload_id(job.checkpoint) else None
        if record is None:
            raise _not_found("model", job.checkpoint, "checkpoint", "upload it with POST /v1/models first")
        _check_model_fits(record, spec)
        model = record
    if spec.dataset.name == "upload":
        dataset = datasets.get(spec.dataset.id, tenant)
        if dataset is None:
            raise _not_found("dataset", spec.dataset.id, "spec.dataset.id", "upload it with POST /v1/datasets first")
    for index, reg in enumerate(spec.regularizers):
        if isinstance(reg, Sobolev) and is_upload_id(reg.teacher):
            teacher = store.get_checkpoint(reg.teacher, tenant)
            if teacher is None:
                raise _not_found("model", reg.teacher, f"spec.regularizers[{index}].teacher",
                                 "upload the teacher with POST /v1/models first")
            if teacher.format != "registry":
                raise ApiError(422, "invalid_request", "a Sobolev teacher must be a registry checkpoint",
                               problems=[(f"spec.regularizers[{index}].teacher", f"model {reg.teacher} is "
                                          f"{teacher.format}; upload a robustlab checkpoint as teacher")])
            teachers.append(reg.teacher)
    return References(model, dataset, tuple(teachers))


def _check_model_fits(record: Any, spec: ExperimentSpec) -> None:
    """The spec's model section describes the uploaded model (what it was checked with)."""
    if record.format == "registry":
        if not isinstance(spec.model, RegistryModel):
            raise ApiError(422, "invalid_request", "the spec describes a user model but the upload is a registry "
                           "checkpoint", problems=[("spec.model", f"the upload holds a {record.architecture!r} "
                                                    f"model: use model: {{architecture: {record.architecture}}}")])
        if record.architecture != spec.model.architecture:
            raise ApiError(422, "invalid_request", "the model and the spec name different architectures",
                           problems=[("spec.model.architecture", f"is {spec.model.architecture!r} but the "
                                      f"upload holds a {record.architecture!r} model")])
        return
    declared = spec.model.model_dump(mode="json")
    if declared != record.model:
        differing = sorted(k for k in set(declared) | set(record.model or {})
                           if declared.get(k) != (record.model or {}).get(k))
        raise ApiError(422, "invalid_request", "the spec's model section differs from the one the model was "
                       f"uploaded with ({', '.join(differing)})",
                       problems=[(f"spec.model.{k}", f"is {declared.get(k)!r} but the upload was checked with "
                                  f"{(record.model or {}).get(k)!r}") for k in differing])
