"""The benchmark's peer: the original agent's technology, APScheduler 3.x with a
BlockingScheduler, an interval job and Python logging in the original agent's format.

usage: peer_apscheduler.py once|idle|ticks

  once   one job, run as soon as possible (next_run_time=now); the job body prints its wall
         time (seconds since the epoch) on stdout, then the process exits.
  idle   one 5-minute job, no immediate run; "Scheduler started" goes to stderr (APScheduler's
         own log line), then it blocks until killed.
  ticks  a 1 s interval job, first run one interval after start; stops after 10 runs. For each
         run prints {"run": N, "actual": T, "scheduled": T} on stdout, T in epoch seconds,
         actual taken in the job body, scheduled as APScheduler reports it.
"""
import json
import logging
import sys
import threading
import time
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.schedulers.blocking import BlockingScheduler

TICKS = 10


def main(mode):
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s - %(levelname)5s - %(message)s",
        datefmt="%d-%b-%y %H:%M:%S",
    )
    scheduler = BlockingScheduler(timezone=timezone.utc)

    # Listeners may run inside the scheduler's own loop (a job that finishes before its future's
    # callback is added), where shutting the job stores down would break the loop; stop from a
    # thread of its own instead, which waits for the scheduler's locks.
    def stop():
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": False}).start()

    if mode == "once":
        def job():
            sys.stdout.write("%.6f\n" % time.time())
            sys.stdout.flush()

        def done(_event):
            stop()

        scheduler.add_listener(done, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        scheduler.add_job(job, "interval", seconds=1, id="once",
                          next_run_time=datetime.now(timezone.utc))
    elif mode == "idle":
        scheduler.add_job(lambda: None, "interval", minutes=5, id="idle")
    elif mode == "ticks":
        actual = []
        runs = []

        def job():
            actual.append(time.time())

        def done(event):
            runs.append(event)
            sys.stdout.write(json.dumps({
                "run": len(runs),
                "actual": actual[-1] if actual else None,
                "scheduled": event.scheduled_run_time.timestamp(),
            }) + "\n")
            sys.stdout.flush()
            if len(runs) == TICKS:
                stop()

        scheduler.add_listener(done, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        scheduler.add_job(job, "interval", seconds=1, id="tick")
    else:
        sys.stderr.write("usage: peer_apscheduler.py once|idle|ticks\n")
        return 2

    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
