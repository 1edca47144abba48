"""Spark's task counts while countries train inside Spark tasks, reported through a stage's progress file."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from markdown_pricing.observe.progress import POLL_S, StageProgress

if TYPE_CHECKING:
    from pyspark import SparkContext


class SparkTaskWatcher:
    """Polls Spark's status tracker in a driver thread for the running stages of one job group.

    Countries finish inside Spark tasks, one country to a task (stages.per_country.by_task), and the running stages
    include the scan before the shuffle, so the driver reports tasks done of tasks in those stages, not countries.
    """

    def __init__(self, sc: SparkContext, progress: StageProgress, doing: str, poll_s: float = POLL_S) -> None:
        self._sc = sc
        self._progress = progress
        self._doing = doing
        self._poll_s = poll_s
        # Job groups are per thread: read the caller's now, the polling thread has none.
        self._group = sc.getLocalProperty("spark.jobGroup.id")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="spark-task-watcher", daemon=True)

    def start(self) -> None:
        """Starts polling."""
        self._progress.update(self._doing)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling; safe to call more than once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def tasks(self) -> tuple[int, int] | None:
        """(tasks done, tasks) over the running stages of the job group; None when none is running."""
        tracker = self._sc.statusTracker()
        job_ids = tracker.getJobIdsForGroup(self._group) if self._group else tracker.getActiveJobsIds()
        active = set(tracker.getActiveStageIds())
        stages = [
            tracker.getStageInfo(stage_id)
            for job in filter(None, map(tracker.getJobInfo, job_ids))
            for stage_id in job.stageIds
            if stage_id in active
        ]
        stages = [stage for stage in stages if stage is not None]
        if not stages:
            return None
        return sum(stage.numCompletedTasks for stage in stages), sum(stage.numTasks for stage in stages)

    def _watch(self) -> None:
        last = ""
        while not self._stop.wait(self._poll_s):
            try:
                tasks = self.tasks()
            except Exception:  # the SparkContext stopped under us (py4j errors): nothing left to watch
                return
            message = self._doing if tasks is None else f"{self._doing}: Spark tasks {tasks[0]}/{tasks[1]} done"
            if message != last:
                self._progress.update(message)
                last = message


def watch_spark_tasks(progress: StageProgress, sc: SparkContext, doing: str) -> SparkTaskWatcher:
    """Reports Spark's task counts of the current job group while countries are inside Spark tasks."""
    watcher = SparkTaskWatcher(sc, progress, doing)
    watcher.start()
    return watcher
