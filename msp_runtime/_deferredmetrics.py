"""A global meter provider that loads the OpenTelemetry metrics SDK after startup, losing nothing.

Importing and building the SDK's metrics pipeline costs ~25 ms, a seventh of a cold
start, and nothing needs it before the first response: metrics are read every 30 s at
the earliest. :class:`DeferredMeterProvider` hands out meters and instruments at once;
until :meth:`~DeferredMeterProvider.load` builds the SDK provider (soon after the server
is listening, at the first ``/metrics`` scrape, at shutdown, or when too many
measurements wait), instruments keep their measurements and replay them, in order, into
the real instruments. Observable instruments lose nothing either: they are only
observed when metrics are collected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as api
from opentelemetry.metrics import _Gauge

from .log import get_logger

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.metrics import MeterProvider

__all__ = ["MAX_PENDING", "DeferredMeterProvider"]

MAX_PENDING = 10_000
"""Measurements kept before loading; the one beyond loads the SDK in the caller's thread."""


class DeferredMeterProvider(api.MeterProvider):
    """An API meter provider backed by the SDK provider ``build`` returns, called at most once."""

    def __init__(self, build: Callable[[], MeterProvider]) -> None:
        self._build = build
        self._loaded: MeterProvider | None = None
        self._meters: list[_DeferredMeter] = []
        self._pending = 0
        self._lock = threading.Lock()  # guards the meters, their instruments and pending measurements
        self._load_lock = threading.Lock()  # one build at a time

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> api.Meter:
        with self._lock:
            if self._loaded is None:
                meter = _DeferredMeter(self, name, version, schema_url, attributes)
                self._meters.append(meter)
                return meter
        return self._loaded.get_meter(name, version, schema_url, attributes)

    def load(self) -> MeterProvider:
        """The SDK provider, built now if needed; waiting measurements are replayed into it."""
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._load_lock:
            if self._loaded is not None:
                return self._loaded
            provider = self._build()  # the slow part, outside the lock measurements take
            with self._lock:
                for meter in self._meters:
                    meter._attach(provider)
                self._meters.clear()
                self._pending = 0
                self._loaded = provider
            return provider

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """As the SDK provider's (which callers of ``metrics.get_meter_provider()`` may expect)."""
        return self.load().force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        self.load().shutdown(timeout_millis=timeout_millis)

    def _keep(self, instrument: _DeferredSynchronous, measurement: _Measurement) -> bool:
        """Keep a measurement for later; ``False`` once loaded (the caller then records it directly)."""
        with self._lock:
            if instrument._record is not None:
                return False
            instrument._waiting.append(measurement)
            self._pending += 1
            overflowing = self._pending > MAX_PENDING
        if overflowing:
            self.load()
        return True


_Measurement = tuple[float, "Mapping[str, Any] | None", "Context | None"]


class _DeferredMeter(api.Meter):
    def __init__(
        self,
        provider: DeferredMeterProvider,
        name: str,
        version: str | None,
        schema_url: str | None,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        super().__init__(name, version, schema_url)
        self._provider = provider
        self._attributes = attributes
        self._instruments: list[_DeferredInstrument] = []

    def _attach(self, provider: MeterProvider) -> None:
        real = provider.get_meter(self.name, self.version, self.schema_url, self._attributes)
        for instrument in self._instruments:
            try:
                instrument._attach(real)
            except Exception as exc:  # one instrument the SDK refuses must not cost the others
                get_logger("msp.otel").warning("cannot create a metric instrument", meter=self.name, error=str(exc))
                instrument._refused()

    def _add(self, instrument: _DeferredInstrument) -> Any:
        with self._provider._lock:
            if self._provider._loaded is None:
                self._instruments.append(instrument)
                return instrument
        # loaded meanwhile: hand out the real instrument
        meter = self._provider._loaded.get_meter(self.name, self.version, self.schema_url, self._attributes)
        instrument._attach(meter)
        return instrument._real

    def create_counter(self, name: str, unit: str = "", description: str = "") -> api.Counter:
        return self._add(_DeferredCounter(self._provider, "create_counter", name, unit, description))  # type: ignore[no-any-return]

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> api.UpDownCounter:
        return self._add(_DeferredUpDownCounter(self._provider, "create_up_down_counter", name, unit, description))  # type: ignore[no-any-return]

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Any = None,
    ) -> api.Histogram:
        instrument = _DeferredHistogram(
            self._provider,
            "create_histogram",
            name,
            unit,
            description,
            explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory,
        )
        return self._add(instrument)  # type: ignore[no-any-return]

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> _Gauge:
        return self._add(_DeferredGauge(self._provider, "create_gauge", name, unit, description))  # type: ignore[no-any-return]

    def create_observable_counter(
        self, name: str, callbacks: Any = None, unit: str = "", description: str = ""
    ) -> api.ObservableCounter:
        instrument = _DeferredObservable(self._provider, "create_observable_counter", name, unit, description)
        return self._add(instrument.observing(callbacks))  # type: ignore[no-any-return]

    def create_observable_gauge(
        self, name: str, callbacks: Any = None, unit: str = "", description: str = ""
    ) -> api.ObservableGauge:
        instrument = _DeferredObservable(self._provider, "create_observable_gauge", name, unit, description)
        return self._add(instrument.observing(callbacks))  # type: ignore[no-any-return]

    def create_observable_up_down_counter(
        self, name: str, callbacks: Any = None, unit: str = "", description: str = ""
    ) -> api.ObservableUpDownCounter:
        instrument = _DeferredObservable(self._provider, "create_observable_up_down_counter", name, unit, description)
        return self._add(instrument.observing(callbacks))  # type: ignore[no-any-return]


class _DeferredInstrument:
    """How to create the real instrument on a real meter, and what to do once it exists."""

    def __init__(
        self, provider: DeferredMeterProvider, factory: str, name: str, unit: str, description: str, **options: Any
    ) -> None:
        checked = api.Instrument._check_name_unit_description(name, unit, description)
        if checked["name"] is None:  # the SDK raises these when the instrument is created: so do we
            raise ValueError(f"Expected ASCII string of maximum length 255 characters but got {name}")
        if checked["unit"] is None:
            raise ValueError(f"Expected ASCII string of maximum length 63 characters but got {unit}")
        self._provider = provider
        self._factory = factory
        self._args: tuple[Any, ...] = (name, unit, description)
        self._options = options
        self._real: Any = None

    def _create(self, meter: api.Meter) -> Any:
        return getattr(meter, self._factory)(*self._args, **self._options)

    def _attach(self, meter: api.Meter) -> None:
        self._real = self._create(meter)

    def _refused(self) -> None:
        """The SDK would not create the real instrument: measurements are dropped from now on."""


class _DeferredObservable(_DeferredInstrument, api.ObservableCounter, api.ObservableGauge, api.ObservableUpDownCounter):
    def observing(self, callbacks: Any) -> _DeferredObservable:
        name, unit, description = self._args
        self._args = (name, callbacks, unit, description)
        return self


class _DeferredSynchronous(_DeferredInstrument):
    _method = "add"
    """The real instrument's recording method."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: list[_Measurement] = []
        self._record: Callable[[float, Any, Context | None], None] | None = None

    def _attach(self, meter: api.Meter) -> None:
        real = self._create(meter)
        record = getattr(real, self._method)
        for amount, attributes, context in self._waiting:
            record(amount, attributes, context)
        self._waiting = []
        self._real = real
        self._record = record  # only now: a measurement taken meanwhile must not overtake the replay

    def _refused(self) -> None:
        self._waiting = []
        self._record = _drop

    def _measure(self, amount: float, attributes: Mapping[str, Any] | None, context: Context | None) -> None:
        record = self._record
        if record is None:
            kept = None if attributes is None else dict(attributes)  # the caller may reuse its dict
            if self._provider._keep(self, (amount, kept, context)):
                return
            record = self._record
            assert record is not None  # _keep refuses only once attached
        record(amount, attributes, context)


def _drop(amount: float, attributes: Any, context: Context | None) -> None:
    pass


class _DeferredCounter(_DeferredSynchronous, api.Counter):
    def add(self, amount: float, attributes: Any = None, context: Context | None = None) -> None:
        self._measure(amount, attributes, context)


class _DeferredUpDownCounter(_DeferredSynchronous, api.UpDownCounter):
    def add(self, amount: float, attributes: Any = None, context: Context | None = None) -> None:
        self._measure(amount, attributes, context)


class _DeferredHistogram(_DeferredSynchronous, api.Histogram):
    _method = "record"

    def record(self, amount: float, attributes: Any = None, context: Context | None = None) -> None:
        self._measure(amount, attributes, context)


class _DeferredGauge(_DeferredSynchronous, _Gauge):
    _method = "set"

    def set(self, amount: float, attributes: Any = None, context: Context | None = None) -> None:
        self._measure(amount, attributes, context)
