"""Where jobs and model servers run: the protocol (base), this machine (local/), a cluster (kubernetes/).

Kept empty on purpose: the supervisor (`python -m reconciler.backends.local.supervise`) imports this
package before every job starts, so nothing is imported here.
"""
