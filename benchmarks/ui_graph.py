"""Whole-process benchmark of the dashboard's graph page (`tuneops ui`) on a 1,000-resource project.

It generates the validate benchmark's spec repository of N resources (N/5 of each kind), with an
`architecture:` block on every BaseModel so that planning it needs no Hub request (without one,
each plan asks the Hub for every base model's config.json). It checks that `tuneops validate`
accepts it, and that reading and planning it opens no network socket. The state is the embedded
default MLflow store (SQLite under the repository's `.tuneops/`), empty: nothing is built, so the
plan is 800 `create` and 200 `noop`, and every node is Pending or Ready. Then it measures, against
real `tuneops ui` processes on a free loopback port:

- cold: from starting `tuneops ui` to the last byte of the first `GET /` (process start, imports,
  loading and planning the project, reading the state, rendering the page);
- warm: `GET /`, `GET /?fragment=main` (what the page's script polls), the same with the ETag it
  was given (304), and `GET /api/state`, once the snapshot is cached (`--refresh 3600`), each
  over a new connection, with the size of each answer;
- in-process (one child process, no HTTP): `reconciler.ui.snapshot.read_snapshot` (load, plan,
  read the state) and `graph_page(snapshot)` alone, the server-side render;
- live: with the default `--refresh 2`, `GET /?fragment=main` every 2 s as the page's script polls
  (with `If-None-Match`), and the share of a CPU the `tuneops ui` process takes meanwhile;
- baselines in the same session: `python -c pass`, and `tuneops status` on the same repository
  (the command line reading the same state).

It also checks what the page claims, "loads with one request for state": the HTML of `GET /` holds
every node (`data-resource=` in its svg), and loading it fetches nothing but /static/ui.css and
/static/ui.js (links to other pages are not fetched). Processes are timed by wall clock; cold
rounds run `python -c pass`, `tuneops status` and `tuneops ui` in turn, after one warm-up round.
It never asserts on time; it exits non-zero only when the setup is not what it measures (the
repository does not validate, its plan opens a socket, the page lacks nodes). Every `tuneops ui`
it starts is terminated before it exits, on an error too.

    python benchmarks/ui_graph.py                      # 1,000 resources, 5 rounds
    python benchmarks/ui_graph.py --repeat 9 --requests 30 --markdown

Needs the project with its `ui` extra (uvicorn).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from common import (  # benchmarks/common.py, beside this script
    fresh_workdir,
    git_commit,
    print_table,
    stop_like_ctrl_c,
)
from plan_scale import ARCHITECTURE, free_port
from validate_scale import CHILD_ENV, Repo, check_valid, generate, time_once, tuneops_command

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
DEFAULT_WORKDIR = HERE / ".work" / "ui-graph"  # git-ignored
TARGET_RENDER_S = 1.0  # the issue: the graph page of 1,000 resources renders in under 1 s server-side
WARM_REFRESH_S = 3600  # `--refresh` for the warm measures: the snapshot is read once, then cached
POLL_EVERY_S = 2.0  # what ui.js waits between polls (the page's data-refresh-ms)
STATIC = ("/static/ui.css", "/static/ui.js")


# --------------------------------------------------------------------------- the repository

def generate_repo(root: Path, n: int) -> Repo:
    """validate_scale's repository; every BaseModel gets plan_scale's `architecture:` block, so
    neither the target-module check nor memory planning asks the Hub for its config.json."""
    repo = generate(root, n)
    for path in sorted((root / "base-models").rglob("*.yaml")):
        documents = path.read_text(encoding="utf-8").split("---\n")
        path.write_text("---\n".join(document + ARCHITECTURE for document in documents), encoding="utf-8")
    return repo


# --------------------------------------------------------------------------- processes and HTTP

@dataclass
class Answer:
    status: int
    body: bytes
    seconds: float  # from sending the request (connection included) to the last byte
    etag: str | None


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 300) -> Answer:
    """One request over a new connection, as a browser's first request or a poll after idling."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.perf_counter()
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, body, time.perf_counter() - start, response.getheader("ETag"))
    finally:
        connection.close()


class Dashboard:
    """A `tuneops ui` process on a free loopback port; its output goes to a log file."""

    live: list[Dashboard] = []  # every one not yet stopped, stopped on the way out

    def __init__(self, tuneops: list[str], repo: str, cwd: Path, log: Path, refresh: float):
        self.port = free_port()
        self.log = log.open("a")
        self.argv = [*tuneops, "ui", repo, "--listen", f"127.0.0.1:{self.port}", "--refresh", f"{refresh:g}"]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, env=CHILD_ENV)
        Dashboard.live.append(self)

    def first_page(self, timeout: float = 300) -> Answer:
        """`GET /` as soon as the port accepts, timed from the process's start."""
        deadline = self.started + timeout
        while True:
            if self.process.poll() is not None:
                self.log.flush()
                raise SystemExit(f"FAIL: {' '.join(self.argv)} exited {self.process.returncode}: "
                                 f"{Path(self.log.name).read_text()[-2000:]}")
            if time.perf_counter() > deadline:
                raise SystemExit(f"FAIL: {' '.join(self.argv)} did not answer within {timeout:g} s")
            with contextlib.suppress(ConnectionRefusedError):
                with contextlib.closing(http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)) \
                        as connection:
                    connection.request("GET", "/")
                    response = connection.getresponse()
                    body = response.read()
                    answer = Answer(response.status, body, time.perf_counter() - self.started,
                                    response.getheader("ETag"))
                if answer.status != 200:
                    raise SystemExit(f"FAIL: the first GET / answered {answer.status}: {body[:500]!r}")
                return answer
            time.sleep(0.005)

    def cpu_seconds(self) -> float:
        """User and system CPU time of the process so far, all its threads (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the server stops and says "stopped"
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        with contextlib.suppress(ValueError):
            Dashboard.live.remove(self)


# --------------------------------------------------------------------------- what the page loads

class Loads(HTMLParser):
    """The URLs a browser fetches to show a page (stylesheets, scripts, images, icons, ...), kept
    apart from links it only follows when clicked; data: URLs are inline, not fetched."""

    FETCHED_LINK_RELS = {"stylesheet", "icon", "shortcut", "preload", "modulepreload", "prefetch",
                         "manifest", "apple-touch-icon", "import"}
    SRC_TAGS = {"script", "img", "iframe", "embed", "source", "video", "audio", "input", "track", "frame"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fetched: list[str] = []
        self.inline: list[str] = []  # data: URLs
        self.links: list[str] = []  # <a href>: followed when clicked, not loaded
        self._style = False

    def _found(self, url: str) -> None:
        if url.startswith("data:"):
            self.inline.append(url)
        elif url and not url.startswith("#"):
            self.fetched.append(url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "a":
            self.links.append(values.get("href", ""))
        elif tag == "link" and set(values.get("rel", "").lower().split()) & self.FETCHED_LINK_RELS:
            self._found(values.get("href", ""))
        elif tag in self.SRC_TAGS and values.get("src"):
            self._found(values["src"])
        elif tag in ("image", "use", "feimage") and (values.get("href") or values.get("xlink:href")):
            self._found(values.get("href") or values.get("xlink:href", ""))
        elif tag == "object" and values.get("data"):
            self._found(values["data"])
        elif tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            self._found(values.get("content", "").partition("url=")[2])
        elif tag == "style":
            self._style = True
        for value in values.values():  # style="background: url(...)", marker-end="url(#arrow)"
            for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", value):
                self._found(url)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._style = False

    def handle_data(self, data: str) -> None:
        if self._style:
            for url in re.findall(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)", data):
                self._found(next(part for part in url if part))


@dataclass
class PageCheck:
    nodes_in_svg: int
    svg_nodes_attribute: str
    edges: int
    fetched: list[str]
    inline: list[str]
    links: int
    css_urls: list[str]
    script_fetches: list[str]  # the first argument of each fetch(), and any other way to request
    script_polls_fragment: bool  # the URL it fetches is the page's own, with ?fragment=main
    static_bytes: dict[str, int]
    state_nodes: int

    def one_request(self, size: int) -> bool:
        return (self.nodes_in_svg == size and self.state_nodes == size
                and sorted(self.fetched) == sorted(STATIC) and not self.css_urls
                and self.script_fetches == ["fragmentUrl()"] and self.script_polls_fragment)

    def lines(self, size: int) -> list[str]:
        verdict = "met" if self.one_request(size) else "NOT met"
        return [
            f"GET / holds {self.nodes_in_svg:,} nodes (`data-resource=` in its svg; data-nodes="
            f'"{self.svg_nodes_attribute}") and {self.edges:,} edges; /api/state lists {self.state_nodes:,}',
            "loading GET / fetches: " + ", ".join(
                f"{url} ({self.static_bytes.get(url, 0):,} bytes)" for url in self.fetched)
            + (f"; inline: {', '.join(self.inline)}" if self.inline else ""),
            f"not fetched on load: {self.links:,} links (<a href>) to other pages; ui.css has "
            f"{len(self.css_urls)} url(); ui.js calls fetch() {len(self.script_fetches)} time(s): "
            + ", ".join(self.script_fetches) + " (the poll, every 2 s after load)",
            f"one request for state (all {size:,} nodes in GET /, nothing else fetched but "
            f"{' and '.join(STATIC)}): {verdict}",
        ]


def check_page(page: bytes, state: bytes, static: dict[str, bytes]) -> PageCheck:
    html = page.decode()
    svg = html[html.find("<svg"): html.rfind("</svg>")]
    loads = Loads()
    loads.feed(html)
    loads.close()
    script = static["/static/ui.js"].decode()
    return PageCheck(
        nodes_in_svg=svg.count("data-resource="),
        svg_nodes_attribute=(re.search(r'data-nodes="(\d+)"', svg) or [None, "?"])[1],
        edges=svg.count('class="edge"'),
        fetched=loads.fetched, inline=loads.inline, links=len(loads.links),
        css_urls=re.findall(r"url\(|@import", static["/static/ui.css"].decode()),
        script_fetches=re.findall(r"\bfetch\(\s*([\w.]+\(\)|[^,)]*)", script)
        + [call for call in ("XMLHttpRequest", "EventSource", "WebSocket", "sendBeacon", "import(")
           if call in script],
        script_polls_fragment='searchParams.set("fragment", "main")' in script,
        static_bytes={url: len(body) for url, body in static.items()},
        state_nodes=len(json.loads(state)["nodes"]),
    )


# --------------------------------------------------------------------------- in-process

CHILD_HOOK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request")


def in_process(root: Path, reads: int, renders: int) -> None:
    """The child: read the snapshot `reads` times and render the graph page `renders` times, in
    this process; print JSON. Counts the sockets the reads open (audit hooks)."""
    sys.path.insert(0, str(PROJECT_ROOT))
    network: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event in CHILD_HOOK_EVENTS:
            network.append(f"{event} {args[:2]!r}")

    sys.addaudithook(hook)
    from reconciler.project import Project
    from reconciler.ui.graph_page import graph_page
    from reconciler.ui.page import rendered
    from reconciler.ui.snapshot import read_snapshot

    read_s, render_s = [], []
    snapshot = None
    for _ in range(reads):
        start = time.perf_counter()
        snapshot = read_snapshot(lambda: Project.load(root), None, {})
        read_s.append(time.perf_counter() - start)
        if snapshot.problem:
            raise SystemExit(f"FAIL: reading {root} failed: {snapshot.problem}")
    page = ""
    for _ in range(renders):
        start = time.perf_counter()
        page = rendered(graph_page, snapshot)  # as the server renders: secrets looked up once a page
        render_s.append(time.perf_counter() - start)
    print(json.dumps({"read_s": read_s, "render_s": render_s, "nodes": len(snapshot.nodes),
                      "counts": snapshot.counts(), "actions": _actions(snapshot),
                      "page_bytes": len(page.encode()), "network": network}))


def _actions(snapshot: object) -> dict[str, int]:
    found: dict[str, int] = {}
    for node in snapshot.nodes:  # type: ignore[attr-defined]
        found[node.action] = found.get(node.action, 0) + 1
    return found


def run_in_process(repo: Path, reads: int, renders: int) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-in-process", str(repo),
            "--repeat", str(reads), "--renders", str(renders)]
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          env=CHILD_ENV)
    if proc.returncode != 0:
        raise SystemExit(f"FAIL: the in-process child exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if result["network"]:
        raise SystemExit(f"FAIL: reading the project opened sockets (it should work offline): "
                         f"{result['network'][:5]}")
    return result


# --------------------------------------------------------------------------- the measures

@dataclass
class Row:
    label: str
    times: list[float] = field(default_factory=list)
    size: int | None = None  # bytes of the answer
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


@dataclass
class Results:
    size: int
    baseline: Row
    status: Row
    rows: list[Row]
    page: PageCheck
    in_process: dict
    live: Row | None = None
    live_cpu_share: float | None = None
    live_not_modified: int = 0
    gzip_bytes: int = 0

    def render_median(self) -> float:
        return statistics.median(self.in_process["render_s"][1:] or self.in_process["render_s"])


def measure_cold(tuneops: list[str], repo: str, cwd: Path, log: Path, repeat: int, size: int) -> tuple[
        Row, Row, Row]:
    baseline = Row("`python -c pass`")
    status = Row(f"`tuneops status`, {size:,} resources")
    cold = Row(f"`tuneops ui`: start to the last byte of the first `GET /` (cold), {size:,} resources")
    status_argv = [*tuneops, "status", repo]
    for round_index in range(repeat + 1):  # round 0 is the warm-up
        times = [time_once([sys.executable, "-c", "pass"], cwd), time_once(status_argv, cwd)]
        dashboard = Dashboard(tuneops, repo, cwd, log, WARM_REFRESH_S)
        try:
            answer = dashboard.first_page()
        finally:
            dashboard.stop()
        times.append(answer.seconds)
        cold.size = len(answer.body)
        if round_index:
            for row, seconds in zip((baseline, status, cold), times, strict=True):
                row.times.append(seconds)
        print(f"round {round_index}/{repeat}{' (warm-up)' if not round_index else ''}: pass "
              f"{times[0]:.3f} s, status {times[1]:.3f} s, ui cold {times[2]:.3f} s", file=sys.stderr)
    return baseline, status, cold


def measure_warm(tuneops: list[str], repo: str, cwd: Path, log: Path, requests: int
                 ) -> tuple[list[Row], PageCheck, int]:
    dashboard = Dashboard(tuneops, repo, cwd, log, WARM_REFRESH_S)
    try:
        first = dashboard.first_page()
        fragment_first = get(dashboard.port, "/?fragment=main")
        rows = [Row("`GET /` (warm)"), Row("`GET /?fragment=main` (warm)"),
                Row("`GET /?fragment=main` with its ETag: 304 (warm)"), Row("`GET /api/state` (warm)")]
        paths = [("/", None), ("/?fragment=main", None),
                 ("/?fragment=main", {"If-None-Match": fragment_first.etag or ""}), ("/api/state", None)]
        for path, _ in paths:  # a warm-up request of each
            get(dashboard.port, path)
        bodies: dict[str, bytes] = {}
        for _ in range(requests):  # interleaved
            for row, (path, headers) in zip(rows, paths, strict=True):
                answer = get(dashboard.port, path, headers)
                expected = 304 if headers else 200
                if answer.status != expected:
                    raise SystemExit(f"FAIL: GET {path} answered {answer.status}, expected {expected}")
                row.times.append(answer.seconds)
                row.size = len(answer.body)
                bodies[path if not headers else "304"] = answer.body
        static = {}
        for url in STATIC:
            answer = get(dashboard.port, url)
            if answer.status != 200:
                raise SystemExit(f"FAIL: GET {url} answered {answer.status}")
            static[url] = answer.body
        if bodies["/"] != first.body:
            print("warning: GET / changed between the first request and the warm ones", file=sys.stderr)
        page = check_page(bodies["/"], bodies["/api/state"], static)
        return rows, page, len(gzip.compress(bodies["/"]))
    finally:
        dashboard.stop()


def measure_live(tuneops: list[str], repo: str, cwd: Path, log: Path, polls: int) -> tuple[Row, float, int]:
    """The default `--refresh 2` and a poll every 2 s after the previous answer, as ui.js does."""
    dashboard = Dashboard(tuneops, repo, cwd, log, 2.0)
    try:
        etag = dashboard.first_page().etag
        row = Row(f"`GET /?fragment=main` every {POLL_EVERY_S:g} s, `--refresh 2` (live)")
        not_modified = 0
        time.sleep(POLL_EVERY_S)
        cpu, start = dashboard.cpu_seconds(), time.perf_counter()
        for _ in range(polls):
            answer = get(dashboard.port, "/?fragment=main", {"If-None-Match": etag} if etag else None)
            row.times.append(answer.seconds)
            if answer.status == 304:
                not_modified += 1
            else:
                etag, row.size = answer.etag, len(answer.body)
            time.sleep(POLL_EVERY_S)
        share = (dashboard.cpu_seconds() - cpu) / (time.perf_counter() - start)
        return row, share, not_modified
    finally:
        dashboard.stop()


# --------------------------------------------------------------------------- report

def environment() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        uvicorn = version("uvicorn")
    except PackageNotFoundError:
        uvicorn = "not installed"
    return {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "implementation": platform.python_implementation(), "platform": platform.platform(),
            "machine": platform.machine(), "cpus": str(os.cpu_count()), "uvicorn": uvicorn,
            "commit": git_commit()}


def all_rows(results: Results) -> list[Row]:
    ip = results.in_process
    read, render = ip["read_s"], ip["render_s"]
    rows = [results.baseline, results.status, *results.rows]
    rows.append(Row("in-process: `read_snapshot` (load, plan, read the state), first call "
                    "(its lazy imports included)", read[:1]))
    if len(read) > 1:
        rows.append(Row("in-process: `read_snapshot`, again", read[1:]))
    rows.append(Row("in-process: `graph_page(snapshot)`, the server-side render", render[1:] or render,
                    ip["page_bytes"]))
    if results.live is not None:
        rows.append(results.live)
    return rows


HEADER = ["Measure", "n", "Median s", "Min s", "Median / `python -c pass`", "Median / `tuneops status`",
          "Bytes"]


def table(results: Results) -> list[list[str]]:
    base, status = results.baseline.median, results.status.median
    return [[row.label, str(len(row.times)), f"{row.median:.3f}", f"{row.best:.3f}",
             f"{row.median / base:.1f}x", f"{row.median / status:.2f}x",
             f"{row.size:,}" if row.size is not None else "-"]
            for row in all_rows(results)]


def summary(results: Results) -> list[str]:
    ip = results.in_process
    render = results.render_median()
    lines = [
        f"project: {results.size:,} resources ({', '.join(f'{n} {a}' for a, n in ip['actions'].items())}; "
        f"phases {', '.join(f'{n} {p}' for p, n in ip['counts'].items())}); reading it opened no socket",
        f"target: the graph page of {results.size:,} resources renders in under {TARGET_RENDER_S:g} s "
        f"server-side: {'met' if render < TARGET_RENDER_S else 'NOT met'} (graph_page median {render:.3f} s)",
        f"GET / is {results.rows[0].size:,} bytes plain, as timed here ({results.gzip_bytes:,} gzipped, "
        "as the server sends it to a browser that accepts gzip)",
        *results.page.lines(results.size),
    ]
    if results.live is not None:
        lines.append(f"live: {len(results.live.times)} polls, {results.live_not_modified} answered 304; "
                     f"the tuneops ui process used {results.live_cpu_share:.0%} of a CPU meanwhile")
    return lines


def print_text(results: Results, env: dict[str, str], args: argparse.Namespace) -> None:
    print(f"\n{env['date']}  Python {env['python']}  {env['cpus']} CPUs  {env['platform']}  uvicorn "
          f"{env['uvicorn']}  commit {env['commit']}  ({args.repeat} cold rounds after one warm-up, "
          f"{args.requests} warm requests of each, {args.renders} renders)")
    print_table([[cell.replace("`", "") for cell in row] for row in [HEADER, *table(results)]])
    print()
    for line in summary(results):
        print(line.replace("`", ""))


def print_markdown(results: Results, env: dict[str, str], args: argparse.Namespace,
                   tuneops: list[str]) -> None:
    command = " ".join(["python", "benchmarks/ui_graph.py", *sys.argv[1:]])
    print(f"Command: `{command}` (entry point: `{' '.join(tuneops)}`)")
    print()
    print(f"Measured {env['date']}: {env['cpus']} CPUs, {env['platform']}; Python {env['python']} "
          f"({env['implementation']}), uvicorn {env['uvicorn']}; commit {env['commit']}. {args.repeat} cold "
          f"rounds (`python -c pass`, `tuneops status`, `tuneops ui` in turn) after one warm-up round; "
          f"{args.requests} warm requests of each kind, interleaved; {args.renders} renders in one process "
          f"(the first left out).")
    print()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|")
    for row in table(results):
        print("| " + " | ".join(row) + " |")
    print()
    for line in summary(results):
        print(f"- {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1000,
                        help="resources in the project, a multiple of 5 (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed cold rounds, and snapshot reads in one process (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=20,
                        help="warm requests of each kind (default: %(default)s)")
    parser.add_argument("--renders", type=int, default=20,
                        help="graph_page calls in one process (default: %(default)s)")
    parser.add_argument("--polls", type=int, default=10,
                        help="live polls every 2 s with --refresh 2; 0 skips them (default: %(default)s)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the results as Markdown for docs/benchmarks.md")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="where the repository goes (default: benchmarks/.work/ui-graph)")
    parser.add_argument("--child-in-process", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_in_process is not None:
        return in_process(args.child_in_process, args.repeat, args.renders)
    if args.size <= 0 or args.size % 5:
        parser.error("--size must be a positive multiple of 5")
    if min(args.repeat, args.requests, args.renders) < 1 or args.polls < 0:
        parser.error("--repeat, --requests and --renders must be at least 1, --polls at least 0")

    stop_like_ctrl_c()
    workdir = fresh_workdir(args.workdir)
    tuneops = tuneops_command()
    print(f"tuneops command: {' '.join(tuneops)}", file=sys.stderr)
    repo = generate_repo(workdir / f"repo-{args.size}", args.size)
    check_valid(tuneops, repo, workdir)
    relative = os.path.relpath(repo.path, workdir)
    log = workdir / "ui.log"
    try:
        in_proc = run_in_process(repo.path, args.repeat, args.renders)
        if in_proc["nodes"] != args.size:
            raise SystemExit(f"FAIL: the snapshot has {in_proc['nodes']} nodes, expected {args.size}")
        print(f"in-process: read {statistics.median(in_proc['read_s']):.3f} s, render "
              f"{statistics.median(in_proc['render_s']):.3f} s", file=sys.stderr)
        baseline, status, cold = measure_cold(tuneops, relative, workdir, log, args.repeat, args.size)
        warm, page, gzip_bytes = measure_warm(tuneops, relative, workdir, log, args.requests)
        if page.nodes_in_svg != args.size:
            raise SystemExit(f"FAIL: GET / shows {page.nodes_in_svg} nodes, expected {args.size}")
        results = Results(args.size, baseline, status, [cold, *warm], page, in_proc, gzip_bytes=gzip_bytes)
        if args.polls:
            results.live, results.live_cpu_share, results.live_not_modified = measure_live(
                tuneops, relative, workdir, log, args.polls)
    finally:
        for dashboard in list(Dashboard.live):
            dashboard.stop()
    env = environment()
    if args.markdown:
        print_markdown(results, env, args, tuneops)
    else:
        print_text(results, env, args)


if __name__ == "__main__":
    main()
