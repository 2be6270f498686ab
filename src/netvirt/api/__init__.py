"""The REST API (FastAPI): Neutron v2.0 and Octavia v2 shaped routes, tenancy, errors."""
