"""The "Activity" view: calls over time at a glance (a stacked bar chart by decision,
server, tool or client), the most blocked tools and how approvals went; and the tray's
sparkline of the last hour.

Every read of the log runs on a worker (``blocking``: the app's
:meth:`desktop.host.GatewayHost.blocking`) and only while the view is in sight: a
refresh when it is shown or its period changes, then every :data:`REFRESH_MS`. The chart
is painted with Qt's own QPainter from bars laid out when the data (or the size) changes,
so a repaint draws a few hundred rectangles and nothing else.
"""

from __future__ import annotations

import concurrent.futures
import html
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import (
    QColor,
    QHelpEvent,
    QHideEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from desktop.historyview import Blocking
from proxy.audit.log import ApprovalSummary, AuditError, AuditReader
from proxy.errors import LockgateError

__all__ = [
    "BY",
    "DECISION_COLOURS",
    "OTHER",
    "PERIODS",
    "REFRESH_MS",
    "ActivityChart",
    "ActivityRead",
    "ActivityView",
    "Bar",
    "ChartModel",
    "Period",
    "Sparkline",
    "approvals_text",
    "chart_model",
    "duration_words",
    "read_activity",
    "read_sparkline",
    "sparkline_pixmap",
]

REFRESH_MS = 5000  # while the view is in sight
TOP_KEYS = 6  # keys stacked by name; the rest are "other"
OTHER = "other"
TOP_BLOCKED = 10


@dataclass(frozen=True, slots=True)
class Period:
    """A choice of the period selector: how far back, in buckets of how many seconds."""

    label: str
    seconds: float
    bucket: float

    @property
    def buckets(self) -> int:
        return round(self.seconds / self.bucket)


PERIODS: tuple[Period, ...] = (
    Period("Last hour", 3600.0, 60.0),
    Period("Last 24 hours", 86400.0, 3600.0),
    Period("Last 7 days", 7 * 86400.0, 3600.0),
    Period("Last 30 days", 30 * 86400.0, 6 * 3600.0),
)
_DEFAULT_PERIOD = "Last 24 hours"
BY: tuple[tuple[str, str], ...] = (
    ("By decision", "decision"),
    ("By server", "server"),
    ("By tool", "tool"),
    ("By client", "client"),
)
# The Live calls view's colours (desktop/calls.py): greens let through, red denied by the
# policy, orange refused by (or for want of) a person; the two greens told apart here.
DECISION_COLOURS = {
    "allowed": "#1b7f3b",
    "approved": "#7cb342",
    "refused": "#c25e00",
    "denied": "#c62828",
}
_DECISION_ORDER = tuple(DECISION_COLOURS)  # stacked from the bottom up
_PALETTE = ("#1565c0", "#00897b", "#8e24aa", "#f9a825", "#6d4c41", "#d81b60")
_OTHER_COLOUR = "#9e9e9e"
_BLOCKED = ("denied", "refused")
_ERROR_STYLE = "color: #c62828;"
_NO_CALLS = "No calls logged yet: they appear here once an agent makes one."


# -- reading (on a worker) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sparkline:
    """The last hour a minute at a time, oldest first: all calls, and the blocked ones."""

    calls: tuple[int, ...]
    blocked: tuple[int, ...]

    def text(self) -> str:
        calls, blocked = sum(self.calls), sum(self.blocked)
        said = f"Last hour: {calls:,} call{'' if calls == 1 else 's'}"
        return said + (f", {blocked:,} blocked" if blocked else "")


@dataclass(frozen=True, slots=True)
class ActivityRead:
    """One read for the view: the chart's rows and what goes beside it."""

    period: Period
    by: str
    first: float  # the first bucket's start (aligned to the bucket)
    end: float
    rows: list[tuple[float, str, int]]  # AuditReader.activity's
    decisions: dict[str, int]  # calls by decision over the period
    top_blocked: list[tuple[str, int]]
    approvals: ApprovalSummary
    sparkline: Sparkline

    @property
    def calls(self) -> int:
        return sum(self.decisions.values())

    @property
    def blocked(self) -> int:
        return sum(self.decisions.get(d, 0) for d in _BLOCKED)


def first_bucket(now: float, period: Period) -> float:
    """Where the period's first bucket starts: ``period.buckets`` buckets, aligned as the
    log aligns them, the last one holding ``now``."""
    return (math.floor(now / period.bucket) - period.buckets + 1) * period.bucket


def _sparkline_of(rows: list[tuple[float, str, int]], first: float) -> Sparkline:
    calls, blocked = [0] * 60, [0] * 60
    for start, decision, n in rows:
        slot = int((start - first) // 60)
        if 0 <= slot < 60:
            calls[slot] += n
            if decision in _BLOCKED:
                blocked[slot] += n
    return Sparkline(tuple(calls), tuple(blocked))


_LAST_HOUR = PERIODS[0]


def read_sparkline(reader: AuditReader, now: float) -> Sparkline | None:
    """The tray's last hour (on a worker); None when there is no audit log yet.

    Raises:
        AuditError: the log cannot be read.
    """
    if not reader.path.exists():
        return None
    first = first_bucket(now, _LAST_HOUR)
    return _sparkline_of(reader.activity(first, now, bucket=60, by="decision"), first)


def read_activity(reader: AuditReader, period: Period, by: str, now: float) -> ActivityRead | None:
    """Everything the view shows for ``period`` ending at ``now``, keyed ``by`` (on a
    worker); None when there is no audit log yet.

    Raises:
        AuditError: the log cannot be read.
    """
    if not reader.path.exists():
        return None
    first = first_bucket(now, period)
    rows = reader.activity(first, now, bucket=period.bucket, by=by)
    by_decision = rows if by == "decision" else None
    if by_decision is None:
        by_decision = reader.activity(first, now, bucket=period.bucket, by="decision")
    decisions: dict[str, int] = {}
    for _start, decision, n in by_decision:
        decisions[decision] = decisions.get(decision, 0) + n
    hour = first_bucket(now, _LAST_HOUR)
    if period == _LAST_HOUR:
        sparkline = _sparkline_of(by_decision, hour)
    else:
        sparkline = _sparkline_of(reader.activity(hour, now, bucket=60, by="decision"), hour)
    return ActivityRead(
        period=period,
        by=by,
        first=first,
        end=now,
        rows=rows,
        decisions=decisions,
        top_blocked=reader.top_blocked(first, now, limit=TOP_BLOCKED),
        approvals=reader.approvals(first, now),
        sparkline=sparkline,
    )


# -- the chart's model: bars per bucket, stacked per key --------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    start: float  # the bucket's start, epoch seconds
    counts: tuple[int, ...]  # per key of the model, in its order (bottom up)

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class ChartModel:
    """What the chart draws: one bar per bucket (empty ones too), stacked by ``keys``."""

    bucket: float
    keys: tuple[str, ...]  # bottom up; OTHER last when the rest are grouped
    totals: tuple[int, ...]  # per key over the period
    bars: tuple[Bar, ...]
    colours: tuple[str, ...]  # per key

    @property
    def peak(self) -> int:
        return max((bar.total for bar in self.bars), default=0)

    def bar_at(self, start: float) -> Bar | None:
        for bar in self.bars:
            if bar.start == start:
                return bar
        return None


EMPTY_CHART = ChartModel(3600.0, (), (), (), ())


def chart_model(
    rows: Sequence[tuple[float, str, int]],
    *,
    first: float,
    bucket: float,
    buckets: int,
    by: str,
    top: int = TOP_KEYS,
) -> ChartModel:
    """The bars of ``rows`` (:meth:`AuditReader.activity`'s) for ``buckets`` buckets from
    ``first``: decisions in their fixed order and colours; other keys the ``top`` by
    total, most at the bottom, and the rest summed as "other"."""
    totals: dict[str, int] = {}
    for _start, key, n in rows:
        totals[key] = totals.get(key, 0) + n
    if by == "decision":
        keys = [d for d in _DECISION_ORDER if d in totals]
        keys += sorted(k for k in totals if k not in DECISION_COLOURS)
        colours = [DECISION_COLOURS.get(k, _OTHER_COLOUR) for k in keys]
        grouped: dict[str, int] = {k: i for i, k in enumerate(keys)}
    else:
        ranked = sorted(totals, key=lambda k: (-totals[k], k))
        keys = ranked if len(ranked) <= top + 1 else ranked[:top]
        colours = [_PALETTE[i % len(_PALETTE)] for i in range(len(keys))]
        grouped = {k: i for i, k in enumerate(keys)}
        if len(ranked) > len(keys):
            for key in ranked[top:]:
                grouped[key] = len(keys)
            keys.append(OTHER)
            colours.append(_OTHER_COLOUR)
    counts = [[0] * len(keys) for _ in range(buckets)]
    for start, key, n in rows:
        index = round((start - first) / bucket)
        if 0 <= index < buckets:
            counts[index][grouped[key]] += n
    key_totals = [0] * len(keys)
    for key, n in totals.items():
        key_totals[grouped[key]] += n
    bars = tuple(Bar(first + i * bucket, tuple(c)) for i, c in enumerate(counts))
    return ChartModel(bucket, tuple(keys), tuple(key_totals), bars, tuple(colours))


def nice_ceiling(value: int) -> int:
    """The axis' top: the first of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of
    ten at or above ``value`` (so that the tallest bar fills most of the height)."""
    if value <= 1:
        return 1
    power: int = 10 ** len(str(value)) // 10  # the highest power of ten at or below it
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * power >= value and float(step * power).is_integer():
            return int(step * power)
    return 10 * power


_TICK_STEPS = (
    300,
    600,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
)


def _local_offset(moment: float) -> float:
    return float(time.localtime(moment).tm_gmtoff)


def bucket_span(start: float, bucket: float) -> str:
    """A bucket in words, for the tooltip: "Tue 14 May 13:00 to 14:00"."""
    begin, end = time.localtime(start), time.localtime(start + bucket)
    day = time.strftime("%a %d %b", begin)
    return f"{day} {time.strftime('%H:%M', begin)} to {time.strftime('%H:%M', end)}"


class ActivityChart(QWidget):
    """Stacked bars of calls over time. :meth:`set_model` lays the bars out (and again on
    a resize); :meth:`paintEvent` only draws what was laid out."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)
        self.model = EMPTY_CHART
        self.message = ""  # shown instead of bars (no calls, or no log)
        # the layout: per key its rectangles; the plot, the axes' labels and grid
        self.segments: list[tuple[QColor, list[QRectF]]] = []
        self.plot = QRectF()
        self.axis_top = 1
        self.x_labels: list[tuple[float, str]] = []
        self.y_labels: list[tuple[float, str]] = []
        self._slot = 1.0

    def set_model(self, model: ChartModel, message: str = "") -> None:
        self.model = model
        self.message = message
        self._lay_out()
        self.update()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._lay_out()

    def _lay_out(self) -> None:
        model = self.model
        metrics = self.fontMetrics()
        self.axis_top = nice_ceiling(model.peak)
        left = metrics.horizontalAdvance(f"{self.axis_top:,}") + 10
        line = metrics.height()
        self.plot = plot = QRectF(
            left,
            line / 2 + 4,
            max(1.0, self.width() - left - 12),
            max(1.0, self.height() - 2 * line - 12),
        )
        count = len(model.bars)
        self._slot = slot = plot.width() / max(1, count)
        gap = 0.0 if slot < 3 else max(1.0, slot * 0.15)
        scale = plot.height() / self.axis_top
        rects: list[list[QRectF]] = [[] for _ in model.keys]
        for i, bar in enumerate(model.bars):
            x = plot.left() + i * slot + gap / 2
            bottom = plot.bottom()
            for k, n in enumerate(bar.counts):
                if n:
                    height = n * scale
                    rects[k].append(QRectF(x, bottom - height, slot - gap, height))
                    bottom -= height
        self.segments = [(QColor(c), r) for c, r in zip(model.colours, rects, strict=True)]
        self.y_labels = [
            (plot.bottom() - plot.height() * f, f"{round(self.axis_top * f):,}")
            for f in (0.0, 0.5, 1.0)
            if f == 0.0 or round(self.axis_top * f) == self.axis_top * f
        ]
        self.x_labels = self._time_ticks(metrics.horizontalAdvance("Wed 30 Sep") + 16)

    def _time_ticks(self, room: float) -> list[tuple[float, str]]:
        model = self.model
        if not model.bars:
            return []
        first = model.bars[0].start
        span = model.bucket * len(model.bars)
        per_second = self.plot.width() / span
        step = next((s for s in _TICK_STEPS if s * per_second >= room), _TICK_STEPS[-1])
        offset = _local_offset(first)
        if step >= 86400:
            form = "%a %d %b"
        elif span > 86400:
            form = "%a %H:%M"
        else:
            form = "%H:%M"
        tick = math.ceil((first + offset) / step) * step - offset  # local whole steps
        ticks = []
        while tick <= first + span:
            x = self.plot.left() + (tick - first) * per_second
            ticks.append((x, time.strftime(form, time.localtime(tick))))
            tick += step
        return ticks

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        plot = self.plot
        palette = self.palette()
        text = palette.windowText().color()
        grid = QColor(text)
        grid.setAlpha(40)
        painter.setPen(QPen(grid, 1))
        for y, _label in self.y_labels:
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        painter.setPen(Qt.PenStyle.NoPen)
        for colour, rects in self.segments:
            painter.setBrush(colour)
            painter.drawRects(rects)
        painter.setPen(text)
        metrics = self.fontMetrics()
        for y, label in self.y_labels:
            box = QRectF(0, y - metrics.height() / 2, plot.left() - 6, metrics.height())
            painter.drawText(
                box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label
            )
        below = plot.bottom() + 4
        for x, label in self.x_labels:
            painter.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 3))
            width = metrics.horizontalAdvance(label)
            left = min(max(x - width / 2, 0.0), self.width() - width)
            painter.drawText(QPointF(left, below + metrics.ascent() + 2), label)
        if self.message:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, self.message)
        painter.end()

    def bar_at(self, x: float) -> Bar | None:
        """The bar under ``x`` (widget coordinates), if any."""
        if not self.model.bars or not self.plot.left() <= x < self.plot.right():
            return None
        index = int((x - self.plot.left()) / self._slot)
        return self.model.bars[index] if 0 <= index < len(self.model.bars) else None

    def bar_tooltip(self, bar: Bar) -> str:
        lines = [f"<b>{html.escape(bucket_span(bar.start, self.model.bucket))}</b>"]
        if not bar.total:
            lines.append("No calls")
        for key, colour, n in reversed(
            list(zip(self.model.keys, self.model.colours, bar.counts, strict=True))
        ):
            if n:
                lines.append(f'<span style="color:{colour}">■</span> {html.escape(key)}: {n:,}')
        if bar.total and len([n for n in bar.counts if n]) > 1:
            lines.append(f"Total: {bar.total:,}")
        return "<br>".join(lines)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            bar = self.bar_at(event.pos().x())
            if bar is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(event.globalPos(), self.bar_tooltip(bar), self)
            return True
        return super().event(event)


# -- words -----------------------------------------------------------------------------


def duration_words(ms: float) -> str:
    """A wait in words: "0.4 s", "4 s", "31 s", "3 min", "1.5 h"."""
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def approvals_text(summary: ApprovalSummary) -> str:
    """ "12 asked: 9 approved, 3 refused (2 timed out). Answers: median 4 s, 90% within
    31 s." """
    if not summary.asked:
        return "Nobody was asked to approve a call in this period."
    text = f"{summary.asked:,} asked: {summary.approved:,} approved, {summary.refused:,} refused"
    if summary.timed_out:
        text += f" ({summary.timed_out:,} timed out)"
    text += "."
    if summary.median_wait_ms is not None and summary.p90_wait_ms is not None:
        text += (
            f"\nWaited: median {duration_words(summary.median_wait_ms)}, "
            f"90% within {duration_words(summary.p90_wait_ms)}."
        )
    return text


def totals_text(calls: int, blocked: int) -> str:
    return f"{calls:,} call{'' if calls == 1 else 's'}, {blocked:,} blocked"


def legend_html(model: ChartModel) -> str:
    entries = [
        f'<span style="color:{colour}; font-size: large">■</span>&nbsp;{html.escape(key)}'
        f"&nbsp;({total:,})"
        for key, colour, total in reversed(
            list(zip(model.keys, model.colours, model.totals, strict=True))
        )
    ]
    return "&nbsp;&nbsp;&nbsp; ".join(entries)


# -- the tray's sparkline --------------------------------------------------------------


def sparkline_pixmap(
    counts: Sequence[int],
    width: int,
    height: int,
    *,
    blocked: Sequence[int] = (),
    colour: str = "#1565c0",
) -> QPixmap:
    """``counts`` as bars side by side on a light ground (the tray's last hour: one a
    minute), the ``blocked`` part of each in red; a flat line when all are 0."""
    pixmap = QPixmap(width, height)
    pixmap.fill(QColor("#f5f7fa"))
    painter = QPainter(pixmap)
    peak = max(counts, default=0)
    slot = width / max(1, len(counts))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor("#b0bec5"))
    painter.drawRect(QRectF(0, height - 1, width, 1))  # the baseline
    if peak:
        scale = (height - 2) / peak
        for brush, values in ((QColor(colour), counts), (QColor("#c62828"), blocked)):
            painter.setBrush(brush)
            painter.drawRects(
                [
                    QRectF(i * slot, height - n * scale, max(1.0, slot - 0.5), n * scale)
                    for i, n in enumerate(values)
                    if n
                ]
            )
    painter.end()
    return pixmap


# -- the view --------------------------------------------------------------------------


class ActivityView(QWidget):
    """Calls over time, the most blocked tools and the approvals of a period."""

    def __init__(
        self,
        audit_db: Path,
        blocking: Blocking,
        parent: QWidget | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_sparkline: Callable[[Sparkline], None] | None = None,
    ) -> None:
        """``clock`` (epoch seconds) is where the periods end; ``on_sparkline`` gets the
        last hour from each read (the tray shows it)."""
        super().__init__(parent)
        self._reader = AuditReader(audit_db)
        self._blocking = blocking
        self._clock = clock
        self._on_sparkline = on_sparkline

        self.period = QComboBox()
        for period in PERIODS:
            self.period.addItem(period.label, period)
        self.period.setCurrentText(_DEFAULT_PERIOD)
        self.by = QComboBox()
        for label, by in BY:
            self.by.addItem(label, by)
        self.totals = QLabel()
        self.totals.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.totals.font()
        font.setBold(True)
        self.totals.setFont(font)
        self.chart = ActivityChart()
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)

        self.blocked = QTableWidget(0, 2)
        self.blocked.setHorizontalHeaderLabels(["Tool", "Blocked"])
        self.blocked.verticalHeader().setVisible(False)
        self.blocked.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.blocked.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.blocked.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.blocked.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.no_blocked = QLabel("Nothing was blocked in this period.")
        self.approvals = QLabel()
        self.approvals.setWordWrap(True)
        self.approvals.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.period.currentIndexChanged.connect(self.refresh)
        self.by.currentIndexChanged.connect(self.refresh)
        self._timer = QTimer(self, interval=REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

        top = QHBoxLayout()
        top.addWidget(self.period)
        top.addWidget(self.by)
        top.addSpacing(12)
        top.addWidget(self.totals, 1)
        chart_side = QVBoxLayout()
        chart_side.addWidget(self.chart, 1)
        chart_side.addWidget(self.legend)
        blocked_box = QGroupBox("Most blocked tools")
        blocked_layout = QVBoxLayout(blocked_box)
        blocked_layout.addWidget(self.blocked)
        blocked_layout.addWidget(self.no_blocked)
        approvals_box = QGroupBox("Approvals")
        QVBoxLayout(approvals_box).addWidget(self.approvals)
        side = QVBoxLayout()
        side.addWidget(blocked_box, 1)
        side.addWidget(approvals_box)
        side_widget = QWidget()
        side_widget.setLayout(side)
        side_widget.setFixedWidth(340)
        side.setContentsMargins(0, 0, 0, 0)
        body = QHBoxLayout()
        body.addLayout(chart_side, 1)
        body.addWidget(side_widget)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(body, 1)

        self.read: ActivityRead | None = None  # the last one shown
        self._asked = 0  # the latest read asked for: an answer to an earlier one is old news
        self._in_flight: tuple[Period, str] | None = None  # what the latest read is for
        self.no_blocked.setVisible(False)

    @property
    def timer(self) -> QTimer:
        """Refreshes the view while it is in sight (active only then)."""
        return self._timer

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._timer.stop()

    def refresh(self) -> None:
        """Read the chosen period again (on a worker); the answer replaces what is shown.
        A read for the same choice still on its way stands for this one."""
        period: Period = self.period.currentData()
        by: str = self.by.currentData()
        if self._in_flight == (period, by):
            return
        self._asked += 1
        self._in_flight = (period, by)
        asked, reader, now = self._asked, self._reader, self._clock()

        def read() -> ActivityRead | None:
            return read_activity(reader, period, by, now)

        def done(future: concurrent.futures.Future[ActivityRead | None]) -> None:
            if asked != self._asked:
                return  # a later read is on its way
            self._in_flight = None
            if future.cancelled():
                return  # the app is closing
            error = future.exception()
            if error is not None:
                self._failed(error)
                return
            got = future.result()
            if got is None:
                self._show_problem(_NO_CALLS, error=False)
                return
            self._show(got)

        self._blocking(read, done)

    # -- showing ----------------------------------------------------------------------

    def _show(self, got: ActivityRead) -> None:
        self.read = got
        period = got.period
        model = chart_model(
            got.rows, first=got.first, bucket=period.bucket, buckets=period.buckets, by=got.by
        )
        self.chart.set_model(model, "" if got.rows else "No calls in this period")
        self.legend.setText(legend_html(model))
        self.totals.setStyleSheet("")
        self.totals.setText(totals_text(got.calls, got.blocked))
        self.blocked.setRowCount(len(got.top_blocked))
        for row, (tool, n) in enumerate(got.top_blocked):
            self.blocked.setItem(row, 0, QTableWidgetItem(tool))
            count = QTableWidgetItem(f"{n:,}")
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.blocked.setItem(row, 1, count)
        self.no_blocked.setVisible(not got.top_blocked)
        self.approvals.setText(approvals_text(got.approvals))
        if self._on_sparkline is not None:
            self._on_sparkline(got.sparkline)

    def _failed(self, error: BaseException) -> None:
        if isinstance(error, AuditError) and not self._reader.path.exists():
            self._show_problem(_NO_CALLS, error=False)  # removed between the check and the read
        elif isinstance(error, LockgateError):
            self._show_problem(f"Could not read the audit log: {error.message}", error=True)
        else:
            self._show_problem(f"Could not read the audit log: {error}", error=True)

    def _show_problem(self, text: str, *, error: bool) -> None:
        self.read = None
        self.chart.set_model(EMPTY_CHART, text)
        self.legend.clear()
        self.totals.setStyleSheet(_ERROR_STYLE if error else "")
        self.totals.setText(text)
        self.blocked.setRowCount(0)
        self.no_blocked.setVisible(False)
        self.approvals.clear()
