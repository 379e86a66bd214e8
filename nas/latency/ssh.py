"""The SSH device kind lives in nas/latency/kinds/ssh.py; this module keeps its old import path."""

from __future__ import annotations

from nas.latency.kinds.ssh import SshDevice, SshTarget, parse_ssh_spec

__all__ = ["SshDevice", "SshTarget", "parse_ssh_spec"]
