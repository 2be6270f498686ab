"""``netvirt lab``: an emulated datacenter on one Linux machine (a Mininet for overlays).

Hosts are network namespaces on a shared underlay bridge, each running its own
``netvirt agent``; VMs are namespaces whose ``eth0`` is plugged into their
host's datapath and addressed by a real DHCP client; an external namespace
stands for the Internet behind a gateway host. Modules:

* :mod:`~netvirt.lab.topology` — the YAML file, validated (errors name fields);
* :mod:`~netvirt.lab.net` — namespaces, veths, processes, teardown;
* :mod:`~netvirt.lab.api` — the topology's API objects through the client;
* :mod:`~netvirt.lab.dhcp` — busybox ``udhcpc`` and its event script;
* :mod:`~netvirt.lab.build` — ``up``/``down`` and operations on a running lab;
* :mod:`~netvirt.lab.check` — the connectivity matrix;
* :mod:`~netvirt.lab.state` — the state file that makes ``down`` exact.

See docs/lab.md.
"""
