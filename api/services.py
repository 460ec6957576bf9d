"""What the HTTP API needs from the rest of pmkeeper, handed in by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from core.auth import TokenAuthenticator
from core.clock import Clock, SystemClock
from core.inventory import InventoryRepository
from core.ports import AssetHistory, AssetRepository, DeadLetterRepository, TelemetryStore
from core.technicians import TechnicianRepository
from rules.alerting import AlertPolicy
from rules.ports import AlertStore, RuleRepository, WorkOrderRepository
from scheduler.ports import BookingStore, PlanRepository


@dataclass
class ApiServices:
    """The repositories, stores and probes the API's routes use."""

    assets: AssetRepository
    deadletters: DeadLetterRepository
    telemetry: TelemetryStore
    tokens: TokenAuthenticator
    rules: RuleRepository
    alerts: AlertStore
    work_orders: WorkOrderRepository
    history: AssetHistory
    inventory: InventoryRepository
    technicians: TechnicianRepository
    plans: PlanRepository
    bookings: BookingStore
    metrics_registry: CollectorRegistry
    readiness_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    clock: Clock = field(default_factory=SystemClock)
    # The same damping live evaluation uses, so a backtest counts alerts the same way.
    alert_policy: AlertPolicy = field(default_factory=AlertPolicy)
    # How long a valid token is trusted without asking `tokens` again; 0 asks every time.
    token_cache_s: float = 5.0
