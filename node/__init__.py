"""skymesh's node runtime: the public API a service imports.

Example::

    from node import Node, Service, expose

    class Hello(Service):
        @expose
        def hello(self, who):
            return f"hello, {who}"

    with Node.standalone(workers=2) as node:
        h = node.newservice(Hello)
        print(node.call(h, "hello", "world"))
"""

from coord.errors import LockLost, LockTimeout, NameTaken

from ._harbor_link import TransportFactory
from .address import Group, format_handle, group
from .builtins import Agent, Gate, start_console
from .config import NodeConfig, load_config
from .errors import (
    CallError,
    CallFailed,
    CallTimeout,
    ConfigError,
    Interrupted,
    NodeDown,
    Overloaded,
    ReloadError,
    ServiceExited,
    ServiceNotFound,
    ServiceStartError,
    SkymeshError,
    SocketError,
)
from .node import Node
from .service import Service, expose, launchable
from .supervisor import ChildSpec, Supervisor

__all__ = [
    "Agent",
    "CallError",
    "CallFailed",
    "CallTimeout",
    "ChildSpec",
    "ConfigError",
    "Gate",
    "Group",
    "Interrupted",
    "LockLost",
    "LockTimeout",
    "NameTaken",
    "Node",
    "NodeConfig",
    "NodeDown",
    "Overloaded",
    "ReloadError",
    "Service",
    "ServiceExited",
    "ServiceNotFound",
    "ServiceStartError",
    "SkymeshError",
    "SocketError",
    "Supervisor",
    "TransportFactory",
    "expose",
    "format_handle",
    "group",
    "launchable",
    "load_config",
    "start_console",
]
