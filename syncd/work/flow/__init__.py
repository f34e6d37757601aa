"""Flow control: bandwidth (token buckets and the timetable), parallel slots, quotas,
pauses and service-wide holds, and the order in which waiting files are taken."""

from syncd.work.flow.clock import Clock
from syncd.work.flow.gate import Flow, FlowGauges, FlowStore
from syncd.work.flow.holds import Hold
from syncd.work.flow.order import rank
from syncd.work.flow.quota import TooLarge

__all__ = ["Clock", "Flow", "FlowGauges", "FlowStore", "Hold", "TooLarge", "rank"]
