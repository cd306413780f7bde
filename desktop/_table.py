"""What the app's table models share: fixed columns over a Python list of rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

__all__ = ["ListTableModel"]

T = TypeVar("T")


class ListTableModel(QAbstractTableModel, Generic[T]):
    """A flat table: one row per item of :meth:`items`, the columns named in ``columns``."""

    columns: ClassVar[tuple[str, ...]] = ()

    def items(self) -> Sequence[T]:
        raise NotImplementedError

    def item_at(self, index: QModelIndex | QPersistentModelIndex) -> T | None:
        """The row's item, or None for an index that is not one of this table's."""
        items = self.items()
        if not index.isValid() or not 0 <= index.row() < len(items):
            return None
        return items[index.row()]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.items())

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        horizontal = orientation == Qt.Orientation.Horizontal
        if horizontal and role == Qt.ItemDataRole.DisplayRole and 0 <= section < len(self.columns):
            return self.columns[section]
        return None
