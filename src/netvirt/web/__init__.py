"""The web GUI ("single pane of glass"), served under ``/ui/`` by ``netvirt serve``.

Plain HTML, CSS and vanilla ES modules shipped in the package: nothing is
built with npm and nothing is fetched from the Internet at run time. The
pages talk to the server only through the public REST API, with the token
the user logs in with, so the GUI can never show more than the API would.
"""
