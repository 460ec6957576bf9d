"""The rule engine: find the rules a reading matches and keep every key's state.

`RuleEngine` is still a function of data (readings and times in, outcomes out); the
ingest side feeds it, persists its outcomes and rebuilds its windows after a restart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from core.assets import Asset
from core.telemetry import Reading
from rules.evaluate import (
    Calm,
    Event,
    Point,
    RuleState,
    Run,
    Status,
    calm_bounds,
    calm_test,
    durable,
    evaluate,
    extend_window,
    run_of,
    settle,
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
_BLANK = RuleState()


def _timed(rule: Rule, state: RuleState) -> bool:
    """Tell whether a key needs the timer: a `for`, a quiet period or a silence to watch."""
    if state.status is Status.PENDING:
        return True
    if state.status is Status.FIRING:
        return state.clear_since_ms is not None
    return isinstance(rule.condition, NoData) and state.last_ts_ms is not None


class _Match(NamedTuple):
    """A rule matched by a series, with its key and what its fast path needs."""

    rule: Rule
    key: StateKey
    span: int | None  # the window the rule keeps: its condition's, or None for evidence only
    calm: Calm
    bounds: tuple[float, float] | None


class _Series:
    """A series' matched rules, and what its synced keys share.

    A synced key is resting and has seen exactly the series' readings: its true state is
    its stored one with the series' last reading time and the series' window for its span.
    A calm run of readings then advances every synced key at once: one check of the run's
    extremes for the keys without a window, one call each for the others, and one window
    per span. A key leaves on anything else and is evaluated on its own; it joins again
    once a run settles it in step with the series.
    """

    __slots__ = (
        "bounded",
        "high",
        "last_ts",
        "low",
        "matches",
        "synced",
        "warm",
        "windowed",
        "windows",
    )

    def __init__(self, matches: tuple[_Match, ...]) -> None:
        self.matches = matches
        self.synced: dict[StateKey, _Match] = {}
        self.last_ts = 0
        self.windows: dict[int | None, tuple[Point, ...]] = {}
        # The run extremes every synced key without a window stays calm within...
        self.low, self.high = -math.inf, math.inf
        self.bounded = False  # some synced key has no window of its own
        # ...and the synced keys that test a run against their window.
        self.windowed: tuple[_Match, ...] = ()
        self.warm = False  # every key of the series is warm: `cold_series` skips it

    def regroup(self) -> None:
        """Recompute the shared bounds after a key joined or left."""
        bounds = [m.bounds for m in self.synced.values() if m.bounds is not None]
        self.bounded = bool(bounds)
        self.low = max((low for low, _ in bounds), default=-math.inf)
        self.high = min((high for _, high in bounds), default=math.inf)
        self.windowed = tuple(m for m in self.synced.values() if m.bounds is None)
        if not self.synced:
            self.windows = {}


def _in_step(series: _Series, match: _Match, state: RuleState) -> RuleState:
    """Return a synced key's true state: its own, with the series' time and window."""
    return RuleState(
        state.status,
        series.last_ts,
        state.pending_since_ms,
        state.firing_since_ms,
        state.clear_since_ms,
        state.episode,
        series.windows[match.span],
    )


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
        # The matched rules of each series and their shared state, built once per series.
        self._series: dict[tuple[str, str], _Series] = {}
        self.set_rules(rules)

    @property
    def rules(self) -> Mapping[str, Rule]:
        """Return the rules in force, by id."""
        return self._rules

    def state(self, key: StateKey) -> RuleState:
        """Return a key's state (inactive when never seen)."""
        return self._current(key) or RuleState()

    def states(self) -> Mapping[StateKey, RuleState]:
        """Return every key's state."""
        return {key: self._current(key) or state for key, state in self._states.items()}

    def _current(self, key: StateKey) -> RuleState | None:
        state = self._states.get(key)
        if state is None:
            return None
        series = self._series.get((key.asset_id, key.metric))
        if series is None:
            return state
        match = series.synced.get(key)
        return state if match is None else _in_step(series, match, state)

    def _store(self, key: StateKey, state: RuleState) -> None:
        """Set a key's state, taking it out of its series' step."""
        series = self._series.get((key.asset_id, key.metric))
        if series is not None and series.synced.pop(key, None) is not None:
            series.regroup()
        self._states[key] = state

    def _unsync(self, series: _Series, match: _Match) -> None:
        """Take a key out of its series' step, its state as it stands."""
        self._states[match.key] = _in_step(series, match, self._states[match.key])
        del series.synced[match.key]

    def _unsync_all(self, series: _Series) -> None:
        for match in list(series.synced.values()):
            self._unsync(series, match)
        series.regroup()

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace the rules in force; states of deleted rules are dropped."""
        for series in self._series.values():
            self._unsync_all(series)
        self._series.clear()
        self._rules = {rule.id: rule for rule in rules}
        self._index = RuleIndex(self._rules.values())
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
        for name in [name for name in self._series if name[0] == asset_id]:
            self._unsync_all(self._series.pop(name))

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
        known = self._series
        warm_asset, warm_metric = None, None  # the last reading's series, when warm
        for asset_id, metric, ts_ms, _ in readings:
            if asset_id == warm_asset and metric == warm_metric:
                continue  # the rest of a run (a message with several samples)
            series = (asset_id, metric)
            seen = known.get(series)
            if seen is not None and seen.warm:
                warm_asset, warm_metric = asset_id, metric
                continue
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
        """Evaluate readings in order against the rules that match them.

        Consecutive readings of one series (a message with several samples) are taken as a
        run: a key settles the whole run at once when none of its readings can change
        anything, and evaluates them one by one otherwise.
        """
        outcomes: list[KeyedOutcome] = []
        known = self._series
        batch = readings if isinstance(readings, Sequence) else list(readings)
        count = len(batch)
        at = 0
        while at < count:
            asset_id, metric, ts_ms, value = batch[at]
            end = at + 1
            while end < count and batch[end][1] == metric and batch[end][0] == asset_id:
                end += 1
            points = (
                ((ts_ms, value),) if end == at + 1 else tuple((r[2], r[3]) for r in batch[at:end])
            )
            at = end
            series = known.get((asset_id, metric))
            if series is None:
                series = self._new_series(asset_id, metric, assets(asset_id))
            if series.matches:
                self._apply_run(series, points, outcomes)
        return outcomes

    def _new_series(self, asset_id: str, metric: str, asset: Asset | None) -> _Series:
        matches = tuple(
            _Match(
                rule,
                StateKey(rule.id, asset_id, metric),
                window_ms(rule),
                calm_test(rule),
                calm_bounds(rule),
            )
            for rule in self._index.match(asset_id, metric, asset)
        )
        series = self._series[asset_id, metric] = _Series(matches)
        return series

    def _apply_run(
        self, series: _Series, points: tuple[Point, ...], outcomes: list[KeyedOutcome]
    ) -> None:
        run = run_of(points)
        if series.synced:
            if run is None or points[0][0] <= series.last_ts:
                self._unsync_all(series)  # late or repeated readings: each key decides
            else:
                self._advance_in_step(series, run)
        synced = series.synced
        states = self._states
        warmed = self._warm
        unsettled = []
        for match in series.matches:
            key = match.key
            if key in synced:
                continue
            before = states.get(key, _BLANK)
            settled = None if run is None else settle(match.rule, before, run)
            if settled is None:
                unsettled.append(match)
                continue
            states[key] = settled
            warmed.add(key)
            self._join(series, match, settled)
            if before.last_ts_ms is None:  # a key's first reading: it may need the timer now
                self._note(
                    key=key,
                    rule=match.rule,
                    before=before,
                    after=settled,
                    events=(),
                    outcomes=outcomes,
                )
        # Reading by reading, then rule by rule, so outcomes keep the order of the readings.
        for ts_ms, value in points if unsettled else ():
            for match in unsettled:
                key = match.key
                before = states.get(key, _BLANK)
                after, events = evaluate(match.rule, before, ts_ms, value)
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
                    key=key,
                    rule=match.rule,
                    before=before,
                    after=after,
                    events=events,
                    outcomes=outcomes,
                )
        if not series.warm:
            series.warm = all(match.key in warmed for match in series.matches)

    def _advance_in_step(self, series: _Series, run: Run) -> None:
        """Advance the synced keys over a newer run; those it may change leave the step."""
        synced = series.synced
        left = False
        if run.low < series.low or run.high > series.high:
            for match in list(synced.values()):
                bounds = match.bounds
                if bounds is not None and (run.low < bounds[0] or run.high > bounds[1]):
                    self._unsync(series, match)
                    left = True
        windows: dict[int | None, tuple[Point, ...]] = {}
        for match in series.windowed:
            if match.key not in synced:
                continue
            window = match.calm(series.windows[match.span], run)
            if window is None:
                self._unsync(series, match)
                left = True
            elif match.span not in windows:
                windows[match.span] = window
        if left:
            series.regroup()
            if not synced:
                return
        if series.bounded:
            windows[None] = extend_window(None, series.windows[None], run)
        series.windows = windows
        series.last_ts = run.points[-1][0]

    def _join(self, series: _Series, match: _Match, state: RuleState) -> None:
        """Put a key just settled in step with its series, if it is."""
        if state.status not in _RESTING:
            return
        if series.synced:
            if state.last_ts_ms != series.last_ts:
                return
            shared = series.windows.get(match.span)
            if shared is None:
                series.windows[match.span] = state.window
            elif shared is not state.window and shared != state.window:
                return
        else:
            series.last_ts = state.last_ts_ms or 0
            series.windows = {match.span: state.window}
        series.synced[match.key] = match
        # The series holds the time and window from now on: the key's own copy would only
        # keep an old window alive.
        self._states[match.key] = state._replace(window=())
        series.regroup()

    def tick(self, now_ms: int) -> list[KeyedOutcome]:
        """Advance every key that waits on time: `for` expiries, quiet periods, silences."""
        outcomes: list[KeyedOutcome] = []
        for key in list(self._timed):
            rule = self._rules.get(key.rule_id)
            before = self._current(key)
            if rule is None or before is None:
                self._timed.discard(key)
                continue
            after, events = tick(rule, before, now_ms)
            if after is not before:
                self._store(key, after)
                self._note(
                    key=key, rule=rule, before=before, after=after, events=events, outcomes=outcomes
                )
        return outcomes

    def track(self, key: StateKey, last_ts_ms: int) -> None:
        """Start watching a silent series for a no-data rule (seeded after a restart)."""
        rule = self._rules.get(key.rule_id)
        if rule is None:
            return
        state = self._current(key) or RuleState()
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
            self._store(key, state)
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
