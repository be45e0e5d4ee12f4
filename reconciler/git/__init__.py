"""The one place that talks to Git: command.py runs it (GitPython for the daemon and pods, a plain
subprocess for the control plane's reads); info.py, ref.py, mirror.py and checkout.py use it.
tests/unit/git/test_one_git_module.py fails if any other module runs git or imports GitPython."""
