"""Base models and their versions, and which versions must be served."""

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from adapters.errors import ConflictError
from adapters.registry.models import Adapter, AdapterStatus, BaseModel, BaseVersion
from adapters.registry.names import check_name
from adapters.registry.repository import Repository


class BaseVersionRepository(Repository):
    def add_base_version(self, name: str, version: int | None, *, path: str, fingerprint: str,
                         architecture: dict, source: str) -> BaseVersion:
        check_name("base model", name)
        with self.session() as s:
            base = s.scalar(select(BaseModel).where(BaseModel.name == name))
            if base is None:
                base = BaseModel(name=name)
                s.add(base)
                s.flush()
            latest = s.scalar(select(func.max(BaseVersion.version)).where(BaseVersion.base_model_id == base.id)) or 0
            version = version or latest + 1
            if s.scalar(select(BaseVersion).where(BaseVersion.base_model_id == base.id, BaseVersion.version == version)):
                raise ConflictError(f"base model {name}@{version} already exists", code="base_version_exists")
            row = BaseVersion(base_model_id=base.id, version=version, path=path, fingerprint=fingerprint,
                              architecture=architecture, source=source)
            s.add(row)
            s.flush()
            s.refresh(row, ["base_model"])
            return row

    def versions_of(self, name: str) -> list[BaseVersion]:
        """Every version of one base, newest first."""
        with self.session() as s:
            return list(s.scalars(select(BaseVersion).join(BaseModel).options(joinedload(BaseVersion.base_model))
                                  .where(BaseModel.name == name).order_by(BaseVersion.version.desc())))

    def find_base_version(self, name: str, version: int | None = None) -> BaseVersion | None:
        with self.session() as s:
            query = (select(BaseVersion).join(BaseModel).options(joinedload(BaseVersion.base_model))
                     .where(BaseModel.name == name))
            if version is not None:
                query = query.where(BaseVersion.version == version)
            return s.scalar(query.order_by(BaseVersion.version.desc()).limit(1))

    def list_base_versions(self) -> list[BaseVersion]:
        with self.session() as s:
            return list(s.scalars(select(BaseVersion).options(joinedload(BaseVersion.base_model))
                                  .order_by(BaseVersion.base_model_id, BaseVersion.version)))

    def served_base_versions(self) -> list[BaseVersion]:
        """The latest version of every base, plus any older version an adapter is mapped to
        (ready, or still waiting for its live check there)."""
        versions = self.list_base_versions()
        latest = {}
        for v in versions:
            latest[v.base_model_id] = v
        live = (AdapterStatus.ready, AdapterStatus.received, AdapterStatus.validating)
        with self.session() as s:
            in_use = set(s.scalars(select(Adapter.base_version_id).where(Adapter.status.in_(live))))
        return [v for v in versions if v is latest[v.base_model_id] or v.id in in_use]
