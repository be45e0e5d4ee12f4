"""The graph page: every resource a node coloured by its phase, the dependencies as edges, left
to right in build order, one lane per team, a Sweep's trials inside its node."""

from __future__ import annotations

from reconciler.specs.base import ResourceId
from reconciler.ui.layout import NODE_HEIGHT, NODE_WIDTH, lay_out
from reconciler.ui.page import PHASE_CLASS, esc, frame, resource_href, status_line
from reconciler.ui.snapshot import Node, Snapshot

MAX_TRIAL_DOTS = 24
NAME_CHARS = 26  # what fits a node's width at the stylesheet's size


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _node_svg(node: Node, x: int, y: int) -> str:
    rid = node.resource
    phase = PHASE_CLASS.get(node.phase, "pending")
    status = node.phase + (f" · {node.progress_text}" if node.progress_text else "")
    if not node.progress_text and node.model_version:
        status += f" · {node.model_version}"
    tooltip = "\n".join(part for part in (str(rid), status, node.detail, node.reason) if part)
    parts = [
        f'<a class="node-link" href="{resource_href(rid)}">'
        f'<g class="node phase-{phase} kind-{esc(rid.kind.lower())}" data-resource="{esc(rid)}" '
        f'data-phase="{esc(node.phase)}" transform="translate({x},{y})">',
        f"<title>{esc(tooltip)}</title>",
        f'<rect class="box" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="7"/>',
        f'<rect class="phase-band" width="6" height="{NODE_HEIGHT}" rx="3"/>',
        f'<text class="kind" x="14" y="16">{esc(rid.kind)}</text>',
        f'<text class="name" x="14" y="34">{esc(_short(rid.name, NAME_CHARS))}</text>',
        f'<text class="status" x="14" y="50">{esc(_short(status, NAME_CHARS + 8))}</text>',
    ]
    if node.progress is not None:
        filled = round((NODE_WIDTH - 20) * min(max(node.progress, 0.0), 1.0))
        parts.append(f'<rect class="bar-track" x="10" y="{NODE_HEIGHT - 5}" width="{NODE_WIDTH - 20}" '
                     'height="3"/>'
                     f'<rect class="bar" data-progress="{node.progress:.4f}" x="10" y="{NODE_HEIGHT - 5}" '
                     f'width="{filled}" height="3"/>')
    for index, (number, state) in enumerate(node.trials[:MAX_TRIAL_DOTS]):
        parts.append(f'<circle class="trial trial-{esc(state)}" cx="{NODE_WIDTH - 10 - (index % 8) * 9}" '
                     f'cy="{10 + (index // 8) * 9}" r="3.2">'
                     f'<title>trial {number}: {esc(state)}</title></circle>')
    parts.append("</g></a>")
    return "".join(parts)


def graph_svg(snapshot: Snapshot) -> str:
    by_id = snapshot.by_id
    order = tuple(node.resource for node in snapshot.nodes)
    depends_on = {node.resource: tuple(dep for dep in node.depends_on if dep in by_id)
                  for node in snapshot.nodes}
    layout = lay_out(order, depends_on)
    parts = [f'<svg class="graph" id="graph" viewBox="0 0 {layout.width} {layout.height}" '
             f'width="{layout.width}" height="{layout.height}" data-nodes="{len(order)}" '
             'role="img" aria-label="resource graph">',
             '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" '
             'orient="auto"><path d="M0,0 L8,4 L0,8 z" class="arrowhead"/></marker></defs>']
    for lane in layout.lanes:
        if lane.team is None and len(layout.lanes) == 1:
            continue
        label = f"team {lane.team}" if lane.team else "no team"
        parts.append(f'<g class="lane" data-team="{esc(lane.team or "")}"><rect x="6" y="{lane.y}" '
                     f'width="{layout.width - 12}" height="{lane.height}" rx="10"/>'
                     f'<text class="lane-name" x="18" y="{lane.y + 22}">{esc(label)}</text></g>')
    for rid in order:
        to = layout.placed[rid]
        for dep in depends_on[rid]:
            source = layout.placed[dep]
            x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2
            x2, y2 = to.x, to.y + NODE_HEIGHT // 2
            bend = max((x2 - x1) / 2, 30)
            parts.append(f'<path class="edge" data-from="{esc(dep)}" data-to="{esc(rid)}" '
                         f'd="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}" '
                         'marker-end="url(#arrow)"/>')
    for node in snapshot.nodes:
        place = layout.placed[node.resource]
        parts.append(_node_svg(node, place.x, place.y))
    parts.append("</svg>")
    return "".join(parts)


def graph_main(snapshot: Snapshot) -> str:
    """The live region: counts by phase, the graph, and where the numbers come from."""
    counts = snapshot.counts()
    summary = " ".join(f'<span class="count phase-{PHASE_CLASS[phase]}" data-phase="{phase}">{counts[phase]} '
                       f"{phase}</span>" for phase in PHASE_CLASS if counts.get(phase))
    if not snapshot.nodes:
        body = '<p class="muted">no resources to show yet</p>'
    else:
        body = f'<div class="graph-scroll">{graph_svg(snapshot)}</div>'
    return f'<h1>Resources</h1><p class="counts">{summary}</p>{status_line(snapshot)}{body}'


def graph_page(snapshot: Snapshot) -> str:
    return frame("graph", graph_main(snapshot), active="Graph")


def node_for(snapshot: Snapshot, kind: str, name: str) -> Node | None:
    return snapshot.by_id.get(ResourceId(kind, name))
