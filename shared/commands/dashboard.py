"""`dustspot dashboard`: rq-dashboard with the JSON serializer and basic auth, always."""
import os
import sys

import click


@click.command("dashboard")
@click.option("--bind", default="127.0.0.1", show_default=True, envvar="DASHBOARD_BIND")
@click.option("--port", default=9181, show_default=True, envvar="PORT", type=int)
@click.option("--redis-url", envvar="REDIS_URL", default=None)
def dashboard(bind, port, redis_url):
    """Serve rq-dashboard for the queues (credentials from RQ_DASHBOARD_USERNAME/PASSWORD).

    Refuses to start without credentials: the dashboard can delete and requeue jobs.
    """
    from shutil import which

    from shared import defaults
    user, password = os.environ.get("RQ_DASHBOARD_USERNAME"), os.environ.get("RQ_DASHBOARD_PASSWORD")
    if not user or not password:
        raise click.ClickException("set RQ_DASHBOARD_USERNAME and RQ_DASHBOARD_PASSWORD (basic auth)")
    # the script installed beside this interpreter first: a venv need not be on PATH
    beside = os.path.join(os.path.dirname(sys.executable), "rq-dashboard")
    program = beside if os.access(beside, os.X_OK) else which("rq-dashboard")
    if program is None:
        raise click.ClickException("rq-dashboard is not installed: pip install 'dustspot[worker]'")
    # Credentials stay in the environment (rq-dashboard reads RQ_DASHBOARD_*), not in argv,
    # where `ps` would show them: the Redis URL too, since it may carry a password.
    env = {**os.environ, "RQ_DASHBOARD_REDIS_URL": redis_url or defaults.redis_url()}
    os.execve(program, [program, "--json", "--bind", bind, "--port", str(port)], env)
