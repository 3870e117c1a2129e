"""``creditmeter serve`` runs the HTTP API; ``creditmeter demo`` builds the demo database, shows
it, and serves it with the built-in demo upstream."""

from __future__ import annotations

import os
from pathlib import Path

import click

from creditmeter import present
from creditmeter.cli.common import DEFAULT_DB, fail, main, now_us, settings_from_env
from creditmeter.cli.tables import console, packages_table, usage_table
from creditmeter.demo import GATEWAY_MODELS, TEAM, TEAMMATE, USER, run_demo
from creditmeter.engine import Engine
from creditmeter.errors import CreditmeterError, InputError
from creditmeter.keys import check_admin_key
from creditmeter.timeutil import format_instant


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes (SQLite allows one writer at a time; use PostgreSQL for many).")
@click.option("--db", "url", metavar="URL", help=f"Database URL (env CREDITMETER_DB, default {DEFAULT_DB}).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="Log every request (metrics are kept either way).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="CREDITMETER_CONFIG",
              help="A YAML file of server, engine and gateway settings (env CREDITMETER_CONFIG; "
                   "see docs/deployment.md, docs/gateway.md).")
def serve(host: str, port: int, workers: int, url: str | None, access_log: bool,
          config_path: Path | None) -> None:
    """Run the HTTP API (operator key from CREDITMETER_ADMIN_KEY or 'keys create --operator')."""
    from creditmeter import serverconfig

    try:
        config = serverconfig.load(config_path, os.environ)
        settings_from_env()  # the same check of the engine's variables as every other command
        admin_key = check_admin_key(os.environ.get("CREDITMETER_ADMIN_KEY"))
    except CreditmeterError as exc:
        fail(exc)
    from creditmeter import server  # the web stack, the slowest import by far: once the settings hold

    try:
        serving = server.Serving(config, url or config.server.database or DEFAULT_DB, admin_key)
        server.check(serving)
        check_port_free(host, port)
    except CreditmeterError as exc:
        fail(exc)
    click.echo(f"creditmeter API on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}, "
               f"{serving.database.split('://', 1)[0]})", err=True)
    server.serve(serving, host=host, port=port, workers=workers, access_log=access_log)


@main.command("demo")
@click.option("--db", "url", metavar="URL", default="sqlite:///creditmeter-demo.db", show_default=True,
              help="Where to create the demo database (an existing demo database is replaced).")
@click.option("--days", type=click.IntRange(1, 60), default=30, show_default=True,
              help="Days of usage to simulate.")
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Then run the server (console and gateway with the demo upstream) until Ctrl-C.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def demo(url: str, days: int, serve: bool, host: str, port: int) -> None:
    """Build a demo database (a user, packages, a team, a month of usage) and serve it."""
    try:
        now = now_us()
        engine, requests = run_demo(url, days, now)
        show_demo(engine, url, now, requests)
        _, key = engine.create_key(USER, now, name="demo key")
    except CreditmeterError as exc:
        fail(exc)
    if not serve:
        click.echo(f"\n{USER}'s key for the API, gateway and console (shown once): {key}")
        return
    _serve_demo(engine, host, port, key)


def check_port_free(host: str, port: int) -> None:
    """Refuse (field ``port``) an address the server could not listen on, before saying it serves:
    plainly, rather than with the server's traceback after its banner."""
    import errno
    import socket

    # The way the server binds: IPv6 for an address with a colon, reusing a port in TIME_WAIT.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise InputError("port", f"{host}:{port} is not free ({exc.strerror or exc}); "
                                 "choose another with --port") from None
            raise InputError("host", f"cannot listen on {host} ({exc.strerror or exc})") from None


def _serve_demo(engine: Engine, host: str, port: int, key: str) -> None:
    from creditmeter import server

    try:
        check_port_free(host, port)
    except CreditmeterError as exc:
        fail(exc)
    app = server.demo_app(engine, GATEWAY_MODELS)
    shown = host if ":" not in host else f"[{host}]"
    click.echo(serve_instructions(f"http://{shown}:{port}", key))
    server.serve_app(app, host=host, port=port)


def show_demo(engine: Engine, url: str, at_us: int, requests: int) -> None:
    """What the demo database holds, and commands to try on it."""
    screen = console()
    screen.rule("[bold]creditmeter demo[/bold] — example prices, not a vendor's")
    screen.print(f"{requests} requests by {USER} and {TEAMMATE} over the last days, replayed at their "
                 f"own times. {USER} also administers the enterprise {TEAM}, which gave quota to both.")
    packages_table(present.balance(engine.balance(USER, at_us)))
    recent = [present.event(e) for e in engine.usage(USER, limit=12)]
    usage_table(recent, title="Recent usage (newest first)")
    problems = engine.check_invariants()
    screen.print("reconcile: every invariant holds" if not problems else f"reconcile: {problems}")
    click.echo(f"\nThe demo database is {url}. Try:\n"
               f"  creditmeter balance {USER} --db {url}\n"
               f"  creditmeter usage list {USER} --db {url} --limit 20\n"
               f"  creditmeter usage record {USER} --model demo-large --input 12000 --output 900 --db {url}\n"
               f"  creditmeter reconcile --db {url}\n"
               f"(now is {format_instant(at_us)})")


def serve_instructions(base_url: str, key: str) -> str:
    """What the demo prints once its server is starting: where to look and how to call it."""
    models = ", ".join(GATEWAY_MODELS)
    return f"""
The demo server is starting on {base_url} (Ctrl-C stops it).

  console   {base_url}/console      sign in with the demo key
  demo key  {key}
            ({USER}'s key, shown once; it also administers {TEAM})
  gateway   {base_url}/v1           models {models}, answered offline by the
            built-in demo upstream (generated text, not a model; true token counts)

Call the gateway with the openai client (pip install openai):

python3 - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{base_url}/v1", api_key="{key}")
reply = client.chat.completions.with_raw_response.create(
    model="demo-small", messages=[{{"role": "user", "content": "Hello, what does this cost?"}}])
print(reply.parse().choices[0].message.content)
print("credits charged:", reply.headers["x-credits-charged"],
      "remaining:", reply.headers["x-credits-remaining"])
EOF

or with curl:

curl -i {base_url}/v1/chat/completions -H "Authorization: Bearer {key}" \\
  -H "Content-Type: application/json" \\
  -d '{{"model": "demo-large", "messages": [{{"role": "user", "content": "Hello"}}]}}'
"""
