"""The one way an exporter queues, retries and times out its sends.

After the OpenTelemetry Collector's ``exporter/exporterhelper``: an exporter supplies two things,
and :class:`QueuedExporter` does the rest.

- **A request converter** (:class:`RequestConverter`, the Collector's request converter and
  batcher in one): how a batch becomes the requests it sends. By default (:data:`BATCHES`) each
  batch is one request. A converter may hold state and accumulate across cycles: CloudWatch packs
  datums into PutMetricData requests, hands over a request as soon as it is full and the rest at
  its ``flush``, which the helper calls every ``flush_interval`` and once at shutdown.
- **A push function**, ``async push(request)``, that sends one request once and raises on failure.

The helper runs them as a chain ``convert -> queue -> retry -> timeout -> push``:

- **Queue.** ``consume`` converts and enqueues, then returns at once, so exporting never delays a
  cycle. The queue is bounded (in the converter's size unit); when full it drops the *oldest*
  request (the newest data is worth most to a dashboard), logs the drop with its datapoint count
  and counts it in self-metrics. ``num_consumers`` workers take requests from it. With the queue
  disabled, ``consume`` sends in the caller (as the Collector does), retries included.
- **Retry.** Exponential backoff with jitter, as the Collector's retry sender (cenkalti/backoff):
  the n-th delay is ``initial_interval * multiplier**n`` capped at ``max_interval``, randomised by
  ``± randomization_factor``. A :class:`~pipeline.ThrottledError` carrying the server's delay waits
  at least that long. A :class:`~pipeline.PermanentExportError` is never retried; every other error
  is (as in the Collector: a push function maps its library's errors to these classes), until
  ``max_elapsed_time`` has passed since the first attempt or the shutdown grace runs out.
- **Timeout.** Each attempt runs under ``asyncio.timeout``. A timeout, or an
  :class:`AmbiguousExportError`, means the server may have accepted the request before the failure,
  so retrying it may store the data twice: such retries are counted as possible duplicates.
- **Start and shutdown.** Start runs ``on_start`` before the workers, so the exporter is ready
  before the queue feeds it. Shutdown stops the flush timer, hands what the converter holds to the
  queue, stops accepting, lets the workers drain the queue within ``shutdown_grace`` (backoff
  delays are shortened so a retry still fits in the grace), then cancels what is left, counts it as
  dropped, and finally calls ``on_shutdown``.

Two layers: :class:`SendingQueue` is the queue, workers and retry for any request type;
:class:`QueuedExporter` is the complete :class:`pipeline.Exporter` built on it, which an exporter
subclasses (or wraps) with its converter and push function.

Self-metrics (prefixed ``cni_pipeline_`` by :class:`pipeline.Telemetry`, labelled
``exporter=<component ID>``): ``exporter_sent_datapoints_total``,
``exporter_failed_datapoints_total`` (refused, or retries exhausted),
``exporter_retries_total``, ``exporter_dropped_datapoints_total`` (queue full, or left at the end
of the shutdown grace), ``exporter_possible_duplicate_datapoints_total`` (retried after an
ambiguous failure), ``exporter_queue_size`` and ``exporter_queue_capacity`` (in the queue's size
unit: requests, or what ``size_of`` counts), ``exporter_last_success_timestamp_seconds``.
"""

from ._exporter import BATCHES, PushFunc, QueuedExporter, RequestConverter
from ._queue import AmbiguousExportError, SendingQueue
from ._queue import _Backoff as _Backoff  # not public; its tests drive it directly
from ._settings import QueueSettings, RetrySettings

__all__ = [
    "BATCHES",
    "AmbiguousExportError",
    "PushFunc",
    "QueueSettings",
    "QueuedExporter",
    "RequestConverter",
    "RetrySettings",
    "SendingQueue",
]
