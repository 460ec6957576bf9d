"""The rule engine: find the rules a reading matches and keep every key's state.

`RuleEngine` is still a function of data (readings and times in, outcomes out); the
ingest side feeds it, persists its outcomes and rebuilds its windows after a restart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from core.assets import Asset
from core.telemetry import Reading
from rules.evaluate import (
    Event,
    Point,
    RuleState,
    Status,
    durable,
    evaluate,
    tick,
    warm,
    window_ms,
)
from rules.model import NoData, Rule, Selector

# Without a window, a restart still reloads this much history: evidence, duplicates, lateness.
MIN_WARMUP_MS = 10 * 60 * 1000


class StateKey(NamedTuple):
    """What a rule state is kept per: (rule, asset, metric)."""

    rule_id: str
    asset_id: str
    metric: str


@dataclass(frozen=True, slots=True)
class KeyedOutcome:
    """A key whose persisted state changed, or that produced events."""

    key: StateKey
    rule: Rule
    state: RuleState
    events: tuple[Event, ...]


AssetLookup = Callable[[str], Asset | None]


def selects(selector: Selector, asset_id: str, asset: Asset | None) -> bool:
    """Tell whether a selector picks an asset (the metric is matched by the index)."""
    if selector.asset_id is not None and selector.asset_id != asset_id:
        return False
    if selector.asset_type is None and selector.site is None and not selector.tags:
        return True
    if asset is None:
        return False  # attributes unknown: only an asset-id selector can match
    if selector.asset_type is not None and selector.asset_type != asset.type:
        return False
    if selector.site is not None and selector.site != asset.site:
        return False
    return all(asset.tags.get(name) == value for name, value in selector.tags.items())


class RuleIndex:
    """Rules by metric, then by the most specific part of their selector.

    A reading looks up its metric, then its asset id, type and site, and checks only the
    candidates found, so the cost grows with the rules that could match, not with all rules.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._by_asset: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        self._by_type: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        self._by_site: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        self._broad: dict[str, list[Rule]] = defaultdict(list)
        self._cache: dict[tuple[str, str], tuple[Rule, ...]] = {}
        for rule in rules:
            if not rule.enabled:
                continue
            selector = rule.selector
            if selector.asset_id is not None:
                self._by_asset[selector.metric, selector.asset_id].append(rule)
            elif selector.asset_type is not None:
                self._by_type[selector.metric, selector.asset_type].append(rule)
            elif selector.site is not None:
                self._by_site[selector.metric, selector.site].append(rule)
            else:
                self._broad[selector.metric].append(rule)  # all assets, or tagged ones

    def match(self, asset_id: str, metric: str, asset: Asset | None) -> tuple[Rule, ...]:
        """Return the enabled rules that watch this asset's metric."""
        cached = self._cache.get((asset_id, metric))
        if cached is not None:
            return cached
        candidates = list(self._by_asset.get((metric, asset_id), ()))
        if asset is not None:
            candidates += self._by_type.get((metric, asset.type), ())
            candidates += self._by_site.get((metric, asset.site), ())
        candidates += self._broad.get(metric, ())
        found = tuple(rule for rule in candidates if selects(rule.selector, asset_id, asset))
        self._cache[asset_id, metric] = found
        return found

    def forget(self, asset_id: str) -> None:
        """Drop cached matches of an asset whose attributes changed."""
        for key in [key for key in self._cache if key[0] == asset_id]:
            del self._cache[key]


# Statuses whose persisted part a reading without events cannot change.
_RESTING = (Status.INACTIVE, Status.RESOLVED)


def _timed(rule: Rule, state: RuleState) -> bool:
    """Tell whether a key needs the timer: a `for`, a quiet period or a silence to watch."""
    if state.status is Status.PENDING:
        return True
    if state.status is Status.FIRING:
        return state.clear_since_ms is not None
    return isinstance(rule.condition, NoData) and state.last_ts_ms is not None


class RuleEngine:
    """Every key's state, advanced by readings (`apply`) and by time (`tick`)."""

    def __init__(
        self, rules: Iterable[Rule] = (), states: Mapping[StateKey, RuleState] | None = None
    ) -> None:
        self._rules: dict[str, Rule] = {}
        self._index = RuleIndex(())
        self._states: dict[StateKey, RuleState] = dict(states or {})
        self._timed: set[StateKey] = set()
        self._warm: set[StateKey] = set()
        # The matched rules of each series with their state keys, built once per series.
        self._keyed: dict[tuple[str, str], tuple[tuple[Rule, StateKey], ...]] = {}
        self.set_rules(rules)

    @property
    def rules(self) -> Mapping[str, Rule]:
        """Return the rules in force, by id."""
        return self._rules

    def state(self, key: StateKey) -> RuleState:
        """Return a key's state (inactive when never seen)."""
        return self._states.get(key, RuleState())

    def states(self) -> Mapping[StateKey, RuleState]:
        """Return every key's state."""
        return self._states

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace the rules in force; states of deleted rules are dropped."""
        self._rules = {rule.id: rule for rule in rules}
        self._index = RuleIndex(self._rules.values())
        self._keyed.clear()
        for key in [key for key in self._states if key.rule_id not in self._rules]:
            del self._states[key]
            self._timed.discard(key)
            self._warm.discard(key)
        for key, state in self._states.items():
            rule = self._rules[key.rule_id]
            if rule.enabled and _timed(rule, state):
                self._timed.add(key)
            else:
                self._timed.discard(key)

    def forget_asset(self, asset_id: str) -> None:
        """Re-match an asset's series after its type, site or tags changed."""
        self._index.forget(asset_id)
        for series in [series for series in self._keyed if series[0] == asset_id]:
            del self._keyed[series]

    def matching(self, asset_id: str, metric: str, asset: Asset | None) -> tuple[Rule, ...]:
        """Return the rules that watch a series."""
        return self._index.match(asset_id, metric, asset)

    def cold_series(
        self, readings: Iterable[Reading], assets: AssetLookup
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """Return series with keys not yet warmed: (asset, metric) -> (from_ms, to_ms).

        The caller loads the stored points with from_ms <= ts < to_ms. The range covers the
        longest window of the series' rules and ends before the series' first reading here,
        which the caller has just stored, or just after the newest reading a persisted
        state of the series had already evaluated, whichever is later.
        """
        first_ts: dict[tuple[str, str], int] = {}
        for asset_id, metric, ts_ms, _ in readings:
            series = (asset_id, metric)
            if ts_ms < first_ts.get(series, ts_ms + 1):
                first_ts[series] = ts_ms
        cold: dict[tuple[str, str], tuple[int, int]] = {}
        for (asset_id, metric), ts_ms in first_ts.items():
            spans = []
            end_ms = ts_ms
            for rule in self._index.match(asset_id, metric, assets(asset_id)):
                key = StateKey(rule.id, asset_id, metric)
                if key in self._warm:
                    continue
                spans.append(max(window_ms(rule) or 0, MIN_WARMUP_MS))
                state = self._states.get(key)
                # A replay after a restart can start before what the persisted states saw:
                # the readings in between would be too late to re-enter the windows, so
                # they come from the store. Outcomes are recorded per batch, so every key
                # of the series evaluated them. A no-data state's time may come from
                # `track`, seeded from the store, which proves nothing was evaluated.
                if (
                    state is not None
                    and state.last_ts_ms is not None
                    and state.last_ts_ms >= end_ms
                    and not isinstance(rule.condition, NoData)
                ):
                    end_ms = state.last_ts_ms + 1
            if spans:
                cold[asset_id, metric] = (end_ms - max(spans), end_ms)
        return cold

    def cold_states(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Return series of pending or firing keys not yet warmed: (asset, metric) -> range.

        Used on start: such a key may need its window before any reading arrives (the
        timer fires a `for` period with the last value seen). The range ends with the
        newest reading the persisted state had evaluated (a pending key persists each
        one): a stored reading after it may never have been evaluated (a crash between
        the write and the record, or the rules-only process's backlog) and must come
        through `apply`, not the warm-up, or its transition would be lost as a duplicate.
        """
        cold: dict[tuple[str, str], tuple[int, int]] = {}
        for key, state in self._states.items():
            rule = self._rules.get(key.rule_id)
            if (
                rule is None
                or key in self._warm
                or state.last_ts_ms is None
                or state.status not in (Status.PENDING, Status.FIRING)
            ):
                continue
            start = state.last_ts_ms - max(window_ms(rule) or 0, MIN_WARMUP_MS)
            end = state.last_ts_ms + 1
            series = (key.asset_id, key.metric)
            if series in cold:
                start, end = min(start, cold[series][0]), max(end, cold[series][1])
            cold[series] = (start, end)
        return cold

    def warm(
        self, asset_id: str, metric: str, points: Sequence[Point], asset: Asset | None
    ) -> None:
        """Refill the windows of a series' keys from stored history (no events)."""
        for rule in self._index.match(asset_id, metric, asset):
            key = StateKey(rule.id, asset_id, metric)
            if key in self._warm:
                continue
            self._warm.add(key)
            state = warm(rule, self._states.get(key, RuleState()), points)
            if state.last_ts_ms is not None:
                self._states[key] = state
                if _timed(rule, state):
                    self._timed.add(key)

    def apply(self, readings: Iterable[Reading], assets: AssetLookup) -> list[KeyedOutcome]:
        """Evaluate readings in order against the rules that match them."""
        outcomes: list[KeyedOutcome] = []
        states = self._states
        blank = RuleState()
        keyed = self._keyed
        warmed = self._warm
        for asset_id, metric, ts_ms, value in readings:
            matches = keyed.get((asset_id, metric))
            if matches is None:
                matches = tuple(
                    (rule, StateKey(rule.id, asset_id, metric))
                    for rule in self._index.match(asset_id, metric, assets(asset_id))
                )
                keyed[asset_id, metric] = matches
            for rule, key in matches:
                before = states.get(key, blank)
                after, events = evaluate(rule, before, ts_ms, value)
                if after is before:
                    continue
                states[key] = after
                warmed.add(key)
                if (
                    not events
                    and after.status is before.status
                    and after.status in _RESTING
                    and before.last_ts_ms is not None
                ):
                    continue  # the usual case: a newer reading, nothing to persist or time
                self._note(
                    key=key, rule=rule, before=before, after=after, events=events, outcomes=outcomes
                )
        return outcomes

    def tick(self, now_ms: int) -> list[KeyedOutcome]:
        """Advance every key that waits on time: `for` expiries, quiet periods, silences."""
        outcomes: list[KeyedOutcome] = []
        for key in list(self._timed):
            rule = self._rules.get(key.rule_id)
            before = self._states.get(key)
            if rule is None or before is None:
                self._timed.discard(key)
                continue
            after, events = tick(rule, before, now_ms)
            if after is not before:
                self._states[key] = after
                self._note(
                    key=key, rule=rule, before=before, after=after, events=events, outcomes=outcomes
                )
        return outcomes

    def track(self, key: StateKey, last_ts_ms: int) -> None:
        """Start watching a silent series for a no-data rule (seeded after a restart)."""
        rule = self._rules.get(key.rule_id)
        if rule is None:
            return
        state = self._states.get(key, RuleState())
        if state.last_ts_ms is None or state.last_ts_ms < last_ts_ms:
            state = RuleState(
                state.status,
                last_ts_ms,
                state.pending_since_ms,
                state.firing_since_ms,
                state.clear_since_ms,
                state.episode,
                state.window,
            )
            self._states[key] = state
        if _timed(rule, state):
            self._timed.add(key)

    def _note(
        self,
        *,
        key: StateKey,
        rule: Rule,
        before: RuleState,
        after: RuleState,
        events: Sequence[Event],
        outcomes: list[KeyedOutcome],
    ) -> None:
        if _timed(rule, after):
            self._timed.add(key)
        else:
            self._timed.discard(key)
        # A pending key's last reading time is what the timer's gap check measures from: it
        # is persisted with each reading, or a restart would cancel a rule still being fed.
        moved = after.status is Status.PENDING and after.last_ts_ms != before.last_ts_ms
        if events or moved or durable(before) != durable(after):
            outcomes.append(KeyedOutcome(key, rule, after, tuple(events)))
