"""`python -m worker.fleet start [-c worker=N] [worker]`: honcho, with a stop grace for scans.

honcho gives its processes 5 s between SIGTERM and SIGKILL (on Ctrl-C, or when any process of
the group exits): a worker busy with a 20-50 MP scan is killed mid-scan, the scan is redone
elsewhere and counts towards its "abandoned" limit.  This runs honcho's own command line with
that grace raised to defaults.WORKER_STOP_GRACE_S (as systemd's TimeoutStopSec and k8s'
terminationGracePeriodSeconds in deploy/), so SIGTERM lets the current scan finish.

honcho still stops the whole group when one process exits and restarts nothing: it suits a
host run by hand.  Hosts that must keep running use deploy/systemd or deploy/compose
(docs/operations.md).
"""
import honcho.manager

from shared import defaults


def configure() -> None:
    honcho.manager.KILL_WAIT = defaults.WORKER_STOP_GRACE_S


def main() -> None:
    from honcho.command import main as honcho_main
    configure()
    honcho_main()


if __name__ == "__main__":
    main()
