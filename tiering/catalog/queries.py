"""Catalog look-ups shared by every use case: a dataset by its label."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiering.catalog.models import Dataset
from tiering.catalog.states import DatasetState
from tiering.errors import DatasetNotFound
from tiering.layout import parse_label


def find_dataset(session: Session, label: str) -> Dataset:
    """``name@version`` or ``name`` (the newest registered version). Raises DatasetNotFound."""
    name, version = parse_label(label)
    stmt = select(Dataset).where(Dataset.name == name, Dataset.state != DatasetState.DELETED)
    if version is not None:
        stmt = stmt.where(Dataset.version == version)
    else:
        stmt = stmt.order_by(Dataset.created_at.desc(), Dataset.id.desc())
    ds = session.scalars(stmt.limit(1)).first()
    if ds is None:
        raise DatasetNotFound(name, version)
    return ds
