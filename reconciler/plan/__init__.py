"""Planning: the pure plan (plan.py) and why an action waits (blocked.py), which version a plan diffs
against (in_use.py), gates, a Git base read as built state (base.py), a project's plan with the
state it was computed from (project_plan.py), and the plan as text, Markdown and JSON (report.py)."""
